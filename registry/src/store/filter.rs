//! Optional equalities in a WHERE clause: `AND app = ? AND node = ?` for the filters that
//! are set, with their values bound in the same order. Listings and actions that take
//! "one server", "one node" or "one kind" build their queries with it.

use sqlx::Any;
use sqlx::any::AnyArguments;
use sqlx::query::Query;

#[derive(Clone, Debug, Default)]
pub(crate) struct Filter<'a> {
    sql: String,
    values: Vec<&'a str>,
}

impl<'a> Filter<'a> {
    /// Adds `AND column = ?` when `value` is set.
    pub(crate) fn eq(mut self, column: &str, value: Option<&'a str>) -> Self {
        if let Some(v) = value {
            self.sql.push_str(" AND ");
            self.sql.push_str(column);
            self.sql.push_str(" = ?");
            self.values.push(v);
        }
        self
    }

    /// The clause, to follow a `WHERE` condition: empty when no filter is set.
    pub(crate) fn sql(&self) -> &str {
        &self.sql
    }

    /// Binds the filters' values, after whatever the query bound before them.
    pub(crate) fn bind<'q>(
        &self,
        mut query: Query<'q, Any, AnyArguments<'q>>,
    ) -> Query<'q, Any, AnyArguments<'q>>
    where
        'a: 'q,
    {
        for v in &self.values {
            query = query.bind(*v);
        }
        query
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_filters_that_are_set() {
        let f = Filter::default()
            .eq("app", Some("demo"))
            .eq("node", None)
            .eq("kind", Some("health"));
        assert_eq!(f.sql(), " AND app = ? AND kind = ?");
        assert_eq!(f.values, ["demo", "health"]);
        assert_eq!(Filter::default().eq("node", None).sql(), "");
    }
}
