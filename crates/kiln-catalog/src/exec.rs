//! Statements that run on either kind of connection: sqlx's (PostgreSQL, and SQLite through
//! its connection's thread) or a SQLite connection on the caller's thread ([`crate::inline`]).
//!
//! The catalog's busiest write transactions (an upload's registration, a job's claim, its
//! progress and its completion) are written once against [`Exec`], so the same SQL and the
//! same code serve both backends; on SQLite they run on the caller's thread, with no
//! hand-off to another thread per statement (see `docs/decisions/embedding-speed.md`,
//! "Write transactions on the caller's thread"). The rest of the catalog speaks sqlx directly.

use std::borrow::Cow;
use std::future::Future;
use std::sync::Arc;

use kiln_core::{FileId, OrgId, StoreId};
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, AssertSqlSafe};

use crate::rows::Columns;
use crate::{CatalogError, Dialect, Result};

/// A value bound to a statement's `$N`, typed (PostgreSQL types a NULL by its parameter).
#[derive(Debug, Clone)]
pub(crate) enum Arg {
    Int(Option<i64>),
    Text(Option<String>),
}

impl From<i64> for Arg {
    fn from(v: i64) -> Arg {
        Arg::Int(Some(v))
    }
}

impl From<Option<i64>> for Arg {
    fn from(v: Option<i64>) -> Arg {
        Arg::Int(v)
    }
}

impl From<&str> for Arg {
    fn from(v: &str) -> Arg {
        Arg::Text(Some(v.to_string()))
    }
}

impl From<String> for Arg {
    fn from(v: String) -> Arg {
        Arg::Text(Some(v))
    }
}

impl From<&String> for Arg {
    fn from(v: &String) -> Arg {
        Arg::Text(Some(v.clone()))
    }
}

impl From<Option<&str>> for Arg {
    fn from(v: Option<&str>) -> Arg {
        Arg::Text(v.map(str::to_string))
    }
}

impl From<Option<String>> for Arg {
    fn from(v: Option<String>) -> Arg {
        Arg::Text(v)
    }
}

impl From<&Option<String>> for Arg {
    fn from(v: &Option<String>) -> Arg {
        Arg::Text(v.clone())
    }
}

macro_rules! id_arg {
    ($($id:ty),*) => {$(
        impl From<&$id> for Arg {
            fn from(v: &$id) -> Arg {
                Arg::Text(Some(v.as_str().to_string()))
            }
        }
        impl From<&Option<$id>> for Arg {
            fn from(v: &Option<$id>) -> Arg {
                Arg::Text(v.as_ref().map(|id| id.as_str().to_string()))
            }
        }
    )*};
}
id_arg!(FileId, OrgId, StoreId);

/// A statement and its values.
#[derive(Debug, Clone)]
pub(crate) struct Q {
    sql: Cow<'static, str>,
    args: Vec<Arg>,
}

impl Q {
    pub(crate) fn new(sql: &'static str) -> Q {
        Q {
            sql: Cow::Borrowed(sql),
            args: Vec::new(),
        }
    }

    /// A statement put together by the catalog's own code (from its own constants and
    /// placeholders, never from a caller's text: values are bound).
    pub(crate) fn formatted(sql: String) -> Q {
        Q {
            sql: Cow::Owned(sql),
            args: Vec::new(),
        }
    }

    pub(crate) fn bind(mut self, value: impl Into<Arg>) -> Q {
        self.args.push(value.into());
        self
    }

    fn into_sqlx(self) -> sqlx::query::Query<'static, sqlx::Any, sqlx::any::AnyArguments> {
        let mut query = sqlx::query(AssertSqlSafe(self.sql));
        for arg in self.args {
            query = match arg {
                Arg::Int(v) => query.bind(v),
                Arg::Text(v) => query.bind(v),
            };
        }
        query
    }
}

/// A connection inside a write transaction that runs [`Q`]s.
pub(crate) trait Exec: Send {
    type Row: Columns + Send;

    fn dialect(&self) -> Dialect;

    /// Runs a statement that returns no rows: the rows it changed.
    fn execute(&mut self, q: Q) -> impl Future<Output = Result<u64>> + Send;

    /// Runs a statement: its first row, if any.
    fn fetch_optional(&mut self, q: Q) -> impl Future<Output = Result<Option<Self::Row>>> + Send;

    /// Runs a statement that returns a row: that row.
    fn fetch_one(&mut self, q: Q) -> impl Future<Output = Result<Self::Row>> + Send {
        async move {
            self.fetch_optional(q)
                .await?
                .ok_or(CatalogError::Db(sqlx::Error::RowNotFound))
        }
    }
}

impl Exec for AnyConnection {
    type Row = AnyRow;

    fn dialect(&self) -> Dialect {
        Dialect::of(self)
    }

    async fn execute(&mut self, q: Q) -> Result<u64> {
        Ok(q.into_sqlx().execute(&mut *self).await?.rows_affected())
    }

    async fn fetch_optional(&mut self, q: Q) -> Result<Option<AnyRow>> {
        Ok(q.into_sqlx().fetch_optional(&mut *self).await?)
    }
}

/// sqlx's transactions and pooled connections run statements on the connection they hold.
macro_rules! exec_through_deref {
    ($($holder:ty),*) => {$(
        impl Exec for $holder {
            type Row = AnyRow;

            fn dialect(&self) -> Dialect {
                Dialect::of(self)
            }

            fn execute(&mut self, q: Q) -> impl Future<Output = Result<u64>> + Send {
                let conn: &mut AnyConnection = self;
                conn.execute(q)
            }

            fn fetch_optional(
                &mut self,
                q: Q,
            ) -> impl Future<Output = Result<Option<AnyRow>>> + Send {
                let conn: &mut AnyConnection = self;
                conn.fetch_optional(q)
            }
        }
    )*};
}
exec_through_deref!(
    sqlx::Transaction<'_, sqlx::Any>,
    sqlx::pool::PoolConnection<sqlx::Any>
);

/// A SQLite connection used on the caller's thread: each statement runs when it is called
/// (its future is ready at once), prepared once per connection.
pub(crate) struct LiteConn(pub(crate) rusqlite::Connection);

impl LiteConn {
    /// The statement with its values bound: each `$N` (wherever it appears, as often as it
    /// appears; SQLite numbers named parameters by first appearance) gets the N-th value.
    fn prepare(&self, q: &Q) -> Result<rusqlite::CachedStatement<'_>> {
        let mut stmt = self.0.prepare_cached(&q.sql)?;
        for index in 1..=stmt.parameter_count() {
            let n = stmt
                .parameter_name(index)
                .and_then(|name| name.strip_prefix('$'))
                .and_then(|n| n.parse::<usize>().ok())
                .filter(|n| (1..=q.args.len()).contains(n))
                .ok_or_else(|| {
                    CatalogError::Db(sqlx::Error::Protocol(format!(
                        "parameter {index} of a statement has no value: {}",
                        q.sql
                    )))
                })?;
            match &q.args[n - 1] {
                Arg::Int(v) => stmt.raw_bind_parameter(index, v)?,
                Arg::Text(v) => stmt.raw_bind_parameter(index, v)?,
            }
        }
        Ok(stmt)
    }

    fn execute_now(&self, q: Q) -> Result<u64> {
        Ok(self.prepare(&q)?.raw_execute()? as u64)
    }

    fn fetch_optional_now(&self, q: Q) -> Result<Option<LiteRow>> {
        let mut stmt = self.prepare(&q)?;
        let names: Arc<[String]> = stmt.column_names().into_iter().map(String::from).collect();
        let mut rows = stmt.raw_query();
        let Some(row) = rows.next()? else {
            return Ok(None);
        };
        let values = (0..names.len())
            .map(|i| row.get::<_, rusqlite::types::Value>(i))
            .collect::<rusqlite::Result<Vec<_>>>()?;
        // Step to the statement's end (an `UPDATE … RETURNING` of several rows finishes its
        // work as sqlx's would).
        while rows.next()?.is_some() {}
        Ok(Some(LiteRow { names, values }))
    }
}

impl Exec for LiteConn {
    type Row = LiteRow;

    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    fn execute(&mut self, q: Q) -> impl Future<Output = Result<u64>> + Send {
        std::future::ready(self.execute_now(q))
    }

    fn fetch_optional(&mut self, q: Q) -> impl Future<Output = Result<Option<LiteRow>>> + Send {
        std::future::ready(self.fetch_optional_now(q))
    }
}

/// A row read on the caller's thread, owned.
pub(crate) struct LiteRow {
    names: Arc<[String]>,
    values: Vec<rusqlite::types::Value>,
}

impl LiteRow {
    fn value(&self, col: &str) -> Result<&rusqlite::types::Value> {
        self.names
            .iter()
            .position(|name| name == col)
            .map(|i| &self.values[i])
            .ok_or_else(|| CatalogError::Db(sqlx::Error::ColumnNotFound(col.to_string())))
    }
}

fn decode_error(col: &str, found: &rusqlite::types::Value) -> CatalogError {
    CatalogError::Db(sqlx::Error::ColumnDecode {
        index: col.to_string(),
        source: format!("unexpected {:?}", found.data_type()).into(),
    })
}

impl Columns for LiteRow {
    fn text(&self, col: &str) -> Result<Option<String>> {
        use rusqlite::types::Value;
        match self.value(col)? {
            Value::Text(text) => Ok(Some(text.clone())),
            Value::Null => Ok(None),
            other => Err(decode_error(col, other)),
        }
    }

    fn int(&self, col: &str) -> Result<Option<i64>> {
        use rusqlite::types::Value;
        match self.value(col)? {
            Value::Integer(n) => Ok(Some(*n)),
            Value::Null => Ok(None),
            other => Err(decode_error(col, other)),
        }
    }
}

/// The error of an inline body that waited for something (see [`finish_now`]).
pub(crate) fn waited() -> CatalogError {
    CatalogError::Db(sqlx::Error::Protocol(
        "an inline SQLite statement waited".into(),
    ))
}

/// Runs a future that never waits (the body of an inline SQLite transaction: every statement
/// answers when it is called) to its end; `None` if it waited after all.
pub(crate) fn finish_now<T>(future: impl Future<Output = T>) -> Option<T> {
    use std::task::{Context, Poll, Waker};
    let mut future = std::pin::pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(out) => Some(out),
        Poll::Pending => None,
    }
}

#[cfg(test)]
mod tests {
    use super::finish_now;

    #[test]
    fn a_future_that_waits_is_not_finished_now() {
        assert_eq!(finish_now(async { 7 }), Some(7));
        assert_eq!(finish_now(std::future::pending::<u8>()), None);
    }
}
