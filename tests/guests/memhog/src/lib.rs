//! A hostile fixture: `returner` allocates and touches memory, a MiB at a
//! time, until the host's memory cap (or the 4 GiB address space) ends it.

use returner_sdk::{JobReturn, Result, Returner};

struct Memhog;

const CHUNK: usize = 1 << 20;

impl Returner for Memhog {
    fn returner(_ret: JobReturn) -> Result<()> {
        let mut hoard: Vec<Vec<u8>> = Vec::new();
        loop {
            // Non-zero bytes, so every page is really written.
            hoard.push(vec![0xA5; CHUNK]);
            std::hint::black_box(&hoard);
        }
    }
}

returner_sdk::export_returner!(Memhog);
