//! A hostile fixture: `returner` and `get_load` never return, so only the
//! host's deadline can end them.

use returner_sdk::{JobReturn, Result, Returner, Value};

struct Spin;

/// Counts for ever; `black_box` keeps the optimiser from proving the loop
/// pointless and removing it.
fn spin() -> ! {
    let mut turns: u64 = 0;
    loop {
        turns = std::hint::black_box(turns.wrapping_add(1));
    }
}

impl Returner for Spin {
    fn returner(_ret: JobReturn) -> Result<()> {
        spin()
    }

    fn get_load(_jid: &str) -> Result<Value> {
        spin()
    }
}

returner_sdk::export_returner!(Spin);
