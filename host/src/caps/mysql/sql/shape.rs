//! The shapes a statement may take: an allow-list of statements, of the
//! clauses each may carry, of table sources and of functions. Anything
//! else is refused, so a clause the grant check does not understand never
//! reaches the server. Structs are destructured field by field without `..`:
//! a clause a new sqlparser adds does not compile until it is decided here.

use std::ops::ControlFlow;

use sqlparser::ast::helpers::stmt_create_table::CreateTableBuilder;
use sqlparser::ast::{
    ColumnOption, CreateTable, CreateTableOptions, Delete, Distinct, Expr, Function, FunctionArguments, GroupByExpr,
    Insert, OnInsert, Query, Select, SelectFlavor, SetExpr, SqlOption, Statement, TableConstraint, TableFactor,
    TableObject, Update, Value, Visit, Visitor,
};
use sqlparser::tokenizer::Token;

use super::lexical::printable;
use super::{Denial, Function as HostFunction, Refusal, deny};

/// Built-in functions a statement may call: what Salt returners use to
/// count, compare, format and stamp rows. Everything else is refused:
/// stored functions (which run code of another schema), sequences
/// (`NEXTVAL`, `SETVAL` write), file and lock functions (`LOAD_FILE`,
/// `GET_LOCK`), sleeps and `BENCHMARK`, server information (`USER()`,
/// `VERSION()`), and whatever a new server version adds.
pub const ALLOWED_FUNCTIONS: &[&str] = &[
    // aggregates
    "count", "max", "min", "sum", "avg", "group_concat",
    // dates and times
    "now", "current_timestamp", "current_date", "current_time", "curdate", "curtime", "utc_timestamp", "utc_date",
    "unix_timestamp", "from_unixtime", "date_sub", "date_add", "subdate", "adddate", "timestampdiff", "timestampadd",
    "datediff", "date", "time", "year", "month", "day", "hour", "minute", "second", "date_format", "str_to_date",
    // conditions
    "coalesce", "ifnull", "nullif", "if", "greatest", "least",
    // strings
    "concat", "concat_ws", "length", "char_length", "character_length", "lower", "upper", "lcase", "ucase", "left",
    "right", "substr", "substring", "substring_index", "replace", "locate", "instr", "lpad", "rpad", "reverse", "trim",
    "ltrim", "rtrim", "hex", "unhex", "md5", "sha1", "sha2", "crc32",
    // numbers
    "abs", "round", "floor", "ceil", "ceiling", "mod",
    // JSON
    "json_extract", "json_unquote", "json_valid", "json_object", "json_array", "json_contains", "json_length", "json_keys",
];

/// Refuse anything but the statements `function` runs, in the shapes the
/// grant check understands.
pub fn check(statement: &Statement, function: HostFunction) -> Result<(), Refusal> {
    match (statement, function) {
        (Statement::Query(query), HostFunction::Query) => top_query(query)?,
        (Statement::Query(_), HostFunction::Execute) => {
            return Err(denial("statement", "`execute` runs INSERT, UPDATE, DELETE and CREATE TABLE; use `query` for SELECT"));
        }
        (Statement::Query(_) | Statement::CreateTable(_), HostFunction::Transaction) => {
            return Err(Refusal::Misplaced(
                "a transaction runs INSERT, UPDATE and DELETE only: run SELECT with `query` and CREATE TABLE with `execute`, outside it"
                    .into(),
            ));
        }
        (Statement::Insert(_) | Statement::Update(_) | Statement::Delete(_) | Statement::CreateTable(_), HostFunction::Query) => {
            return Err(denial("statement", "`query` runs SELECT only; use `execute` for other statements"));
        }
        (Statement::Insert(insert), _) => check_insert(insert)?,
        (Statement::Update(update), _) => check_update(update)?,
        (Statement::Delete(delete), _) => check_delete(delete)?,
        (Statement::CreateTable(create), _) => check_create_table(create)?,
        (other, _) => {
            let verb = statement_verb(other);
            return Err(denial(
                format!("statement {verb}"),
                format!("`{verb}` statements are not allowed: only SELECT, INSERT, UPDATE, DELETE and CREATE TABLE"),
            ));
        }
    }
    let source = match statement {
        Statement::Insert(insert) => insert.source.as_deref().map(std::ptr::from_ref),
        _ => None,
    };
    let top = match statement {
        Statement::Query(query) => Some(std::ptr::from_ref(&**query)),
        _ => None,
    };
    let mut walk = Walk { top, insert_source: source, denial: None };
    let _ = statement.visit(&mut walk);
    walk.denial.map_or(Ok(()), |d| Err(Refusal::Denied(d)))
}

fn denial(target: impl Into<String>, reason: impl Into<String>) -> Refusal {
    Refusal::Denied(Denial { target: target.into(), reason: reason.into() })
}

/// The first keyword of a statement, as a refusal names it.
fn statement_verb(statement: &Statement) -> String {
    statement.to_string().split_whitespace().next().unwrap_or("").to_ascii_uppercase()
}

/// A `query` statement: a SELECT, with a WITH clause of SELECTs at its top only.
fn top_query(query: &Query) -> Result<(), Denial> {
    if let Some(with) = &query.with {
        if with.recursive {
            return deny("statement", "WITH RECURSIVE is not allowed");
        }
        for cte in &with.cte_tables {
            if cte.from.is_some() || cte.materialized.is_some() || !cte.alias.columns.is_empty() {
                return deny("statement", "a WITH clause names its SELECTs only: `WITH name AS (SELECT ...)`");
            }
        }
    }
    Ok(())
}

/// Every query anywhere in the statement: its clauses and its body.
fn check_query(query: &Query, values_allowed: bool) -> Result<(), Denial> {
    let Query { with: _, body, order_by: _, limit_clause: _, fetch, locks, for_clause, settings, format_clause, pipe_operators } =
        query;
    if !locks.is_empty() {
        return deny("statement", "locking reads (FOR UPDATE, LOCK IN SHARE MODE) are not allowed");
    }
    if fetch.is_some() || for_clause.is_some() || settings.is_some() || format_clause.is_some() || !pipe_operators.is_empty()
    {
        return deny("statement", "FETCH, FOR, SETTINGS, FORMAT and pipe clauses are not allowed");
    }
    check_body(body, values_allowed)
}

fn check_body(body: &SetExpr, values_allowed: bool) -> Result<(), Denial> {
    match body {
        SetExpr::Select(select) => check_select(select),
        // Visited as a query of its own.
        SetExpr::Query(_) => Ok(()),
        SetExpr::SetOperation { left, right, .. } => {
            check_body(left, false)?;
            check_body(right, false)
        }
        SetExpr::Values(_) if values_allowed => Ok(()),
        SetExpr::Values(_) => deny("statement", "VALUES is allowed only as the rows of an INSERT"),
        SetExpr::Table(_) => deny("statement", "`TABLE name` is not allowed; use SELECT"),
        SetExpr::Insert(_) | SetExpr::Update(_) | SetExpr::Delete(_) | SetExpr::Merge(_) => {
            deny("statement", "a query holds SELECTs only (no `WITH ... INSERT/UPDATE/DELETE`)")
        }
    }
}

fn check_select(select: &Select) -> Result<(), Denial> {
    let Select {
        select_token: _,
        optimizer_hints,
        distinct,
        select_modifiers,
        top,
        top_before_distinct: _,
        projection: _,
        exclude,
        into,
        from: _,
        lateral_views,
        prewhere,
        selection: _,
        connect_by,
        group_by,
        cluster_by,
        distribute_by,
        sort_by,
        having: _,
        named_window,
        qualify,
        window_before_qualify: _,
        value_table_mode,
        flavor,
    } = select;
    if into.is_some() {
        return deny("statement", "SELECT ... INTO (OUTFILE, DUMPFILE or variables) is not allowed");
    }
    if !matches!(distinct, None | Some(Distinct::Distinct)) {
        return deny("statement", "DISTINCT ON is not allowed");
    }
    if !matches!(group_by, GroupByExpr::Expressions(..)) {
        return deny("statement", "GROUP BY ALL is not allowed");
    }
    let plain = optimizer_hints.is_empty()
        && select_modifiers.is_none()
        && top.is_none()
        && exclude.is_none()
        && lateral_views.is_empty()
        && prewhere.is_none()
        && connect_by.is_empty()
        && cluster_by.is_empty()
        && distribute_by.is_empty()
        && sort_by.is_empty()
        && named_window.is_empty()
        && qualify.is_none()
        && value_table_mode.is_none()
        && *flavor == SelectFlavor::Standard;
    if !plain {
        return deny(
            "statement",
            "a SELECT takes DISTINCT, columns, FROM, WHERE, GROUP BY, HAVING, ORDER BY and LIMIT only (no modifiers, hints or windows)",
        );
    }
    Ok(())
}

fn check_insert(insert: &Insert) -> Result<(), Denial> {
    let Insert {
        insert_token: _,
        optimizer_hints,
        or,
        ignore: _,
        into: _,
        table,
        table_alias,
        columns: _,
        overwrite,
        source: _,
        assignments: _,
        partitioned,
        after_columns,
        has_table_keyword,
        on,
        returning,
        output,
        replace_into: _,
        priority,
        insert_alias,
        settings,
        format_clause,
        multi_table_insert_type,
        multi_table_into_clauses,
        multi_table_when_clauses,
        multi_table_else_clause,
    } = insert;
    if !matches!(table, TableObject::TableName(_)) {
        return deny("statement", "INSERT into a table function is not allowed");
    }
    if !matches!(on, None | Some(OnInsert::DuplicateKeyUpdate(_))) {
        return deny("statement", "only MySQL's ON DUPLICATE KEY UPDATE is allowed after INSERT");
    }
    let plain = optimizer_hints.is_empty()
        && or.is_none()
        && table_alias.is_none()
        && !overwrite
        && partitioned.is_none()
        && after_columns.is_empty()
        && !has_table_keyword
        && returning.is_none()
        && output.is_none()
        && priority.is_none()
        && insert_alias.is_none()
        && settings.is_none()
        && format_clause.is_none()
        && multi_table_insert_type.is_none()
        && multi_table_into_clauses.is_empty()
        && multi_table_when_clauses.is_empty()
        && multi_table_else_clause.is_none();
    if !plain {
        return deny(
            "statement",
            "an INSERT takes IGNORE, a table, columns, VALUES, SELECT or SET, and ON DUPLICATE KEY UPDATE only (no priorities, partitions, aliases or RETURNING)",
        );
    }
    Ok(())
}

fn check_update(update: &Update) -> Result<(), Denial> {
    let Update { update_token: _, optimizer_hints, table: _, assignments: _, from, selection: _, returning, output, or, order_by: _, limit: _ } =
        update;
    if !optimizer_hints.is_empty() || from.is_some() || returning.is_some() || output.is_some() || or.is_some() {
        return deny("statement", "an UPDATE takes tables, SET, WHERE, ORDER BY and LIMIT only");
    }
    Ok(())
}

fn check_delete(delete: &Delete) -> Result<(), Denial> {
    let Delete { delete_token: _, optimizer_hints, tables: _, from: _, using: _, selection: _, returning, output, order_by: _, limit: _ } =
        delete;
    if !optimizer_hints.is_empty() || returning.is_some() || output.is_some() {
        return deny("statement", "a DELETE takes tables, USING, WHERE, ORDER BY and LIMIT only");
    }
    Ok(())
}

/// CREATE TABLE with column definitions and keys, or `LIKE` a table, and
/// the options ENGINE=InnoDB, CHARSET and COLLATE: no other engine (MERGE
/// and FEDERATED reach other tables and servers), no foreign keys (a
/// reference to a table reads it and blocks deletes in it), no `AS SELECT`,
/// no partitions, data directories or generated columns.
fn check_create_table(create: &CreateTable) -> Result<(), Denial> {
    const SHAPE: &str = "CREATE TABLE takes column definitions, keys, LIKE, and the options ENGINE=InnoDB, CHARSET and COLLATE only";
    let allowed = CreateTableBuilder::new(create.name.clone())
        .if_not_exists(create.if_not_exists)
        .columns(create.columns.clone())
        .constraints(create.constraints.clone())
        .like(create.like.clone())
        .table_options(create.table_options.clone())
        .build();
    if allowed != *create {
        return deny("statement", SHAPE);
    }
    for column in &create.columns {
        for option in &column.options {
            let ok = match &option.option {
                ColumnOption::Null
                | ColumnOption::NotNull
                | ColumnOption::Default(_)
                | ColumnOption::OnUpdate(_)
                | ColumnOption::PrimaryKey(_)
                | ColumnOption::Unique(_)
                | ColumnOption::CharacterSet(_)
                | ColumnOption::Collation(_) => true,
                ColumnOption::DialectSpecific(tokens) => {
                    matches!(tokens.as_slice(), [Token::Word(w)] if w.value.eq_ignore_ascii_case("AUTO_INCREMENT"))
                }
                _ => false,
            };
            if !ok {
                return deny(
                    "statement",
                    format!("column option `{}` is not allowed: {SHAPE}", printable(&option.option.to_string())),
                );
            }
        }
    }
    for constraint in &create.constraints {
        if !matches!(constraint, TableConstraint::PrimaryKey(_) | TableConstraint::Unique(_) | TableConstraint::Index(_)) {
            return deny("statement", format!("`{}` is not allowed: {SHAPE}", printable(&constraint.to_string())));
        }
    }
    let options = match &create.table_options {
        CreateTableOptions::None => &[][..],
        CreateTableOptions::Plain(options) => options.as_slice(),
        _ => return deny("statement", SHAPE),
    };
    for option in options {
        if !table_option_allowed(option) {
            return deny("statement", format!("table option `{}` is not allowed: {SHAPE}", printable(&option.to_string())));
        }
    }
    Ok(())
}

fn table_option_allowed(option: &SqlOption) -> bool {
    match option {
        SqlOption::NamedParenthesizedList(list) => {
            list.key.value.eq_ignore_ascii_case("ENGINE")
                && list.values.is_empty()
                && list.name.as_ref().is_some_and(|n| n.value.eq_ignore_ascii_case("InnoDB"))
        }
        SqlOption::KeyValue { key, value } => {
            let key = key.value.to_ascii_uppercase();
            let named = matches!(value, Expr::Identifier(_));
            named && matches!(key.as_str(), "CHARSET" | "DEFAULT CHARSET" | "CHARACTER SET" | "DEFAULT CHARACTER SET" | "COLLATE" | "DEFAULT COLLATE")
        }
        _ => false,
    }
}

/// The walk over every query, table source and expression.
struct Walk {
    /// The statement's own query (of `query`), where WITH may stand.
    top: Option<*const Query>,
    /// The rows of an INSERT, where VALUES may stand.
    insert_source: Option<*const Query>,
    denial: Option<Denial>,
}

impl Walk {
    fn verdict(&mut self, result: Result<(), Denial>) -> ControlFlow<()> {
        match result {
            Ok(()) => ControlFlow::Continue(()),
            Err(d) => {
                self.denial = Some(d);
                ControlFlow::Break(())
            }
        }
    }
}

impl Visitor for Walk {
    type Break = ();

    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<()> {
        let at = std::ptr::from_ref(query);
        if query.with.is_some() && self.top != Some(at) {
            return self.verdict(deny("statement", "WITH is allowed only at the start of a SELECT"));
        }
        let result = check_query(query, self.insert_source == Some(at));
        self.verdict(result)
    }

    fn pre_visit_table_factor(&mut self, factor: &TableFactor) -> ControlFlow<()> {
        let result = match factor {
            TableFactor::Table {
                name: _,
                alias,
                args,
                with_hints,
                version,
                with_ordinality,
                partitions,
                json_path,
                sample,
                index_hints,
            } => {
                let plain = alias.as_ref().is_none_or(|a| a.columns.is_empty())
                    && args.is_none()
                    && with_hints.is_empty()
                    && version.is_none()
                    && !with_ordinality
                    && partitions.is_empty()
                    && json_path.is_none()
                    && sample.is_none()
                    && index_hints.is_empty();
                if plain {
                    Ok(())
                } else {
                    deny("statement", "a table is named with an alias at most (no arguments, partitions, hints or versions)")
                }
            }
            TableFactor::Derived { lateral: false, subquery: _, alias: _, sample: None } => Ok(()),
            TableFactor::NestedJoin { .. } => Ok(()),
            other => deny(
                "statement",
                format!("table source `{}` is not allowed: tables, subqueries and joins only", printable(&other.to_string())),
            ),
        };
        self.verdict(result)
    }

    fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<()> {
        let result = match expr {
            Expr::Identifier(ident) if ident.value.starts_with('@') => variable(&ident.value),
            Expr::CompoundIdentifier(idents) if idents.iter().any(|i| i.value.starts_with('@')) => {
                variable(&idents[0].value)
            }
            Expr::Function(f) => check_function(f),
            Expr::Value(v) => match &v.value {
                Value::Number(..) | Value::Boolean(_) | Value::Null => Ok(()),
                Value::Placeholder(p) if p == "?" => Ok(()),
                other => {
                    let what = format!("literal `{}`", printable(&other.to_string()));
                    deny(what.clone(), format!("{what} is not allowed: pass values as `?` parameters"))
                }
            },
            _ => Ok(()),
        };
        self.verdict(result)
    }
}

fn variable(name: &str) -> Result<(), Denial> {
    let what = format!("variable `{}`", printable(name));
    deny(what.clone(), format!("{what} is not allowed"))
}

/// A function call: a built-in of [`ALLOWED_FUNCTIONS`], by its bare name.
fn check_function(f: &Function) -> Result<(), Denial> {
    let Function { name, uses_odbc_syntax, parameters, args: _, filter, null_treatment, over, within_group } = f;
    let bare = match name.0.as_slice() {
        [part] => part.as_ident().map(|i| i.value.to_ascii_lowercase()),
        _ => None,
    };
    let Some(bare) = bare.filter(|n| ALLOWED_FUNCTIONS.contains(&n.as_str())) else {
        let shown = printable(&name.to_string()).to_ascii_lowercase();
        return deny(
            format!("function `{shown}`"),
            format!("function `{shown}` is not allowed: only the built-in functions the README lists are"),
        );
    };
    if *uses_odbc_syntax
        || !matches!(parameters, FunctionArguments::None)
        || filter.is_some()
        || null_treatment.is_some()
        || over.is_some()
        || !within_group.is_empty()
    {
        return deny(format!("function `{bare}`"), format!("function `{bare}` takes plain arguments only (no OVER, FILTER or WITHIN GROUP)"));
    }
    Ok(())
}
