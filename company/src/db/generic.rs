//! Queries written once for both databases: the web pages' own tables (users, sessions, audit,
//! acknowledgements, orders, notifications) are small and their SQL is the common subset, so
//! each is one string with `$1, $2…` parameters (SQLite reads them as `?1, ?2…`) and values of
//! one small type. The records' write path and the forms' reads stay in each dialect's module:
//! there the dialects differ and speed matters.
use super::Db;
use anyhow::Context;

/// A parameter or a column's value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
    Bool(bool),
}

impl From<i64> for Value {
    fn from(v: i64) -> Value {
        Value::Int(v)
    }
}
impl From<bool> for Value {
    fn from(v: bool) -> Value {
        Value::Bool(v)
    }
}
impl From<&str> for Value {
    fn from(v: &str) -> Value {
        Value::Text(v.to_string())
    }
}
impl From<String> for Value {
    fn from(v: String) -> Value {
        Value::Text(v)
    }
}
impl From<&String> for Value {
    fn from(v: &String) -> Value {
        Value::Text(v.clone())
    }
}
impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Value {
        v.map_or(Value::Null, Into::into)
    }
}

/// One row read back.
#[derive(Debug, Clone, PartialEq)]
pub struct Row(pub Vec<Value>);

impl Row {
    pub fn int(&self, i: usize) -> i64 {
        match self.0.get(i) {
            Some(Value::Int(v)) => *v,
            Some(Value::Bool(b)) => *b as i64,
            Some(Value::Real(f)) => *f as i64,
            _ => 0,
        }
    }
    pub fn opt_int(&self, i: usize) -> Option<i64> {
        match self.0.get(i) {
            None | Some(Value::Null) => None,
            _ => Some(self.int(i)),
        }
    }
    /// SQLite keeps a boolean as 0 or 1.
    pub fn bool(&self, i: usize) -> bool {
        self.int(i) != 0
    }
    pub fn opt_bool(&self, i: usize) -> Option<bool> {
        self.opt_int(i).map(|v| v != 0)
    }
    pub fn text(&self, i: usize) -> String {
        match self.0.get(i) {
            Some(Value::Text(s)) => s.clone(),
            Some(Value::Int(v)) => v.to_string(),
            Some(Value::Real(v)) => v.to_string(),
            Some(Value::Bool(v)) => v.to_string(),
            _ => String::new(),
        }
    }
}

/// `$1` → `?1`: SQLite's numbered parameters (`$1` there would be a *named* one, numbered by
/// first appearance).
pub(super) fn sqlite_sql(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '$' && chars.peek().is_some_and(|d| d.is_ascii_digit()) {
            out.push('?');
        } else {
            out.push(c);
        }
    }
    out
}

impl rusqlite::ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, Value as V};
        Ok(ToSqlOutput::Owned(match self {
            Value::Null => V::Null,
            Value::Int(v) => V::Integer(*v),
            Value::Real(v) => V::Real(*v),
            Value::Text(s) => V::Text(s.clone()),
            Value::Bool(b) => V::Integer(*b as i64),
        }))
    }
}

impl tokio_postgres::types::ToSql for Value {
    fn to_sql(
        &self,
        ty: &tokio_postgres::types::Type,
        out: &mut bytes::BytesMut,
    ) -> Result<tokio_postgres::types::IsNull, Box<dyn std::error::Error + Sync + Send>> {
        use tokio_postgres::types::{IsNull, Type};
        // Each value only as the type PostgreSQL asks for: a mismatch is an error, never bytes
        // read as something else.
        match (self, ty) {
            (Value::Null, _) => Ok(IsNull::Yes),
            (Value::Int(v), &Type::INT8) => v.to_sql(ty, out),
            (Value::Int(v), &Type::INT4) => i32::try_from(*v)?.to_sql(ty, out),
            (Value::Int(v), &Type::INT2) => i16::try_from(*v)?.to_sql(ty, out),
            (Value::Int(v), &Type::BOOL) => (*v != 0).to_sql(ty, out),
            (Value::Real(v), &Type::FLOAT8) => v.to_sql(ty, out),
            (Value::Text(s), &Type::TEXT | &Type::VARCHAR | &Type::BPCHAR | &Type::NAME) => {
                s.to_sql(ty, out)
            }
            (Value::Bool(b), &Type::BOOL) => b.to_sql(ty, out),
            (v, ty) => Err(format!("{v:?} given where PostgreSQL expects {ty}").into()),
        }
    }
    fn accepts(_: &tokio_postgres::types::Type) -> bool {
        true
    }
    tokio_postgres::types::to_sql_checked!();
}

fn pg_row(r: &tokio_postgres::Row) -> anyhow::Result<Row> {
    use tokio_postgres::types::Type;
    let mut out = Vec::with_capacity(r.len());
    for (i, col) in r.columns().iter().enumerate() {
        let t = col.type_();
        let v = if *t == Type::INT8 {
            r.try_get::<_, Option<i64>>(i)?.map(Value::Int)
        } else if *t == Type::INT4 {
            r.try_get::<_, Option<i32>>(i)?
                .map(|v| Value::Int(v.into()))
        } else if *t == Type::INT2 {
            r.try_get::<_, Option<i16>>(i)?
                .map(|v| Value::Int(v.into()))
        } else if *t == Type::BOOL {
            r.try_get::<_, Option<bool>>(i)?.map(Value::Bool)
        } else if *t == Type::FLOAT8 {
            r.try_get::<_, Option<f64>>(i)?.map(Value::Real)
        } else if *t == Type::FLOAT4 {
            r.try_get::<_, Option<f32>>(i)?
                .map(|v| Value::Real(v.into()))
        } else {
            r.try_get::<_, Option<String>>(i)
                .with_context(|| format!("column {} of type {t}", col.name()))?
                .map(Value::Text)
        };
        out.push(v.unwrap_or(Value::Null));
    }
    Ok(Row(out))
}

fn sqlite_row(r: &rusqlite::Row, n: usize) -> rusqlite::Result<Row> {
    use rusqlite::types::ValueRef;
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        out.push(match r.get_ref(i)? {
            ValueRef::Null => Value::Null,
            ValueRef::Integer(v) => Value::Int(v),
            ValueRef::Real(v) => Value::Real(v),
            ValueRef::Text(t) | ValueRef::Blob(t) => {
                Value::Text(String::from_utf8_lossy(t).into_owned())
            }
        });
    }
    Ok(Row(out))
}

impl Db {
    /// Runs one statement; returns the rows it changed.
    pub async fn execute(&self, sql: &'static str, params: Vec<Value>) -> anyhow::Result<u64> {
        match self {
            Db::Sqlite(d) => {
                d.with(move |c| {
                    Ok(c.execute(&sqlite_sql(sql), rusqlite::params_from_iter(params))? as u64)
                })
                .await
            }
            Db::Postgres(d) => {
                let p: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
                    params.iter().map(|v| v as _).collect();
                let c = d.client().await?;
                Ok(c.execute(sql, &p).await?)
            }
        }
    }

    /// Runs one query; returns its rows.
    pub async fn query(&self, sql: &'static str, params: Vec<Value>) -> anyhow::Result<Vec<Row>> {
        match self {
            Db::Sqlite(d) => {
                d.with(move |c| {
                    let mut st = c.prepare_cached(&sqlite_sql(sql))?;
                    let n = st.column_count();
                    let rows = st
                        .query_map(rusqlite::params_from_iter(params), |r| sqlite_row(r, n))?
                        .collect::<Result<Vec<_>, _>>()?;
                    Ok(rows)
                })
                .await
            }
            Db::Postgres(d) => {
                let p: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
                    params.iter().map(|v| v as _).collect();
                let c = d.client().await?;
                c.query(sql, &p).await?.iter().map(pg_row).collect()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn numbered_parameters_become_sqlites() {
        assert_eq!(
            super::sqlite_sql("SELECT $1, '$x', $12 FROM t WHERE a = $2"),
            "SELECT ?1, '$x', ?12 FROM t WHERE a = ?2"
        );
    }
}
