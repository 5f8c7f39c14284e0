//! The output tables, each defined once: its name, its row type, and from the row type's
//! fields (each with a [`columns`] kind) its Arrow schema and record batches. A new column is
//! one field in `tables/rows.rs`; a new table one entry there and one line in the list of
//! tables below, which drives the sinks, the continuous job's durability count, the empty
//! tables of an empty run and the schema snapshot test.
//!
//! ```
//! use personaflow_io::tables::{ResonanceRow, Table, TableRow};
//! let row = ResonanceRow {
//!     window_end: 60_000,
//!     user_id: "u1".into(),
//!     segment: "gamer".into(),
//!     cosine: 0.8,
//!     probability: 0.9,
//!     resonating: true,
//!     top: true,
//!     cold_start: false,
//! };
//! let batch = ResonanceRow::to_batch(&[row]);
//! assert_eq!(batch.schema(), Table::Resonance.schema());
//! assert_eq!(batch.num_rows(), 1);
//! ```

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;

/// A row type of a table: its fields are the table's columns, in order.
pub trait TableRow: Sized {
    /// The table's name (its directory).
    const NAME: &'static str;
    /// The table's Arrow schema.
    fn schema() -> SchemaRef;
    /// Rows as a record batch of [`schema`](Self::schema).
    fn to_batch(rows: &[Self]) -> RecordBatch;
}

/// Defines row types: a struct per table whose fields are its columns, each with the
/// [`columns`] kind that makes its Arrow field and array, and their [`TableRow`] impls.
macro_rules! table_rows {
    ($(
        $(#[$meta:meta])*
        $row:ident = $name:literal {
            $( $(#[$fmeta:meta])* $field:ident : $ty:ty => $kind:ident ),* $(,)?
        }
    )*) => {$(
        $(#[$meta])*
        #[derive(Clone, Debug, PartialEq)]
        pub struct $row {
            $( $(#[$fmeta])* pub $field: $ty, )*
        }

        impl $crate::tables::TableRow for $row {
            const NAME: &'static str = $name;

            fn schema() -> ::arrow_schema::SchemaRef {
                use $crate::tables::columns::Column as _;
                let mut fields = Vec::new();
                $( fields.extend($crate::tables::columns::$kind::fields(stringify!($field))); )*
                ::std::sync::Arc::new(::arrow_schema::Schema::new(fields))
            }

            fn to_batch(rows: &[Self]) -> ::arrow_array::RecordBatch {
                use $crate::tables::columns::Column;
                #[allow(non_snake_case)]
                struct Builders {
                    $( $field: <$crate::tables::columns::$kind as Column>::Builder, )*
                }
                let mut b = Builders {
                    $( $field: $crate::tables::columns::$kind::builder(rows.len()), )*
                };
                for r in rows {
                    $( $crate::tables::columns::$kind::append(&mut b.$field, &r.$field); )*
                }
                let mut columns = Vec::new();
                $( $crate::tables::columns::$kind::finish(b.$field, &mut columns); )*
                ::arrow_array::RecordBatch::try_new(<Self as $crate::tables::TableRow>::schema(), columns)
                    .expect("a row type's columns match its schema")
            }
        }
    )*};
}

pub mod columns;
pub mod read;
mod rows;

pub use rows::*;

/// Defines [`Table`]: every table of a run's output, with its row type.
macro_rules! tables {
    ($( $(#[$meta:meta])* $table:ident => $row:ident, )*) => {
        /// The output tables of a run (the continuous job's `late` table, [`LateRow`], is
        /// its own).
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Table {
            $( $(#[$meta])* $table, )*
        }

        impl Table {
            /// Every table, in output order.
            pub const ALL: [Table; [$(stringify!($table)),*].len()] = [$(Table::$table),*];

            /// The table's directory name.
            pub fn name(self) -> &'static str {
                match self {
                    $( Table::$table => <$row as TableRow>::NAME, )*
                }
            }

            /// The table's Arrow schema.
            pub fn schema(self) -> SchemaRef {
                match self {
                    $( Table::$table => <$row as TableRow>::schema(), )*
                }
            }
        }
    };
}

tables! {
    /// Per user and window features.
    Features => FeatureRow,
    /// Per user and window latent profiles.
    Profiles => ProfileRow,
    /// Per segment and window profiles.
    SegmentProfiles => SegmentProfileRow,
    /// Per user, window and segment resonance (long format).
    Resonance => ResonanceRow,
    /// Per user, window and horizon demand forecasts (long format).
    Forecasts => ForecastRow,
    /// Per user and target window: a forecast's error once its window has passed.
    ForecastErrors => ForecastErrorRow,
    /// Per persona and window: size, centroid and characterising features.
    Personas => PersonaRow,
    /// Per user and window: persona, distance and probability over personas.
    PersonaAssignments => PersonaAssignmentRow,
    /// Drift events of segments and personas.
    Drift => DriftRow,
    /// The scaling recommendation of each drift event.
    Scaling => ScalingRow,
    /// Per user and window: the blended network policy.
    Policies => PolicyRow,
    /// Per user and window: predicted behaviour and the socket settings it implies.
    SocketProfiles => SocketProfileRow,
    /// Per user and window passed: the allocation against the demand that came.
    ShapingFeedback => ShapingFeedbackRow,
    /// What other services reported of users (`POST /v1/users/{id}/feedback`).
    ServiceFeedback => ServiceFeedbackRow,
    /// Rejected input rows.
    Rejects => RejectRow,
}

/// `batch` with its `UTC` timestamp columns relabelled `+00:00` (the same instants), which
/// the JSON writer formats without a time-zone database: `2026-01-05T00:01:00+00:00`.
pub fn utc_offset_timestamps(batch: &RecordBatch) -> RecordBatch {
    use arrow_array::TimestampMillisecondArray;
    use arrow_schema::{DataType, Field, Schema, TimeUnit};
    let mut fields = Vec::with_capacity(batch.num_columns());
    let mut columns = Vec::with_capacity(batch.num_columns());
    for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
        match column.as_any().downcast_ref::<TimestampMillisecondArray>() {
            Some(ts) => {
                let relabelled = ts.clone().with_timezone("+00:00");
                fields.push(Field::new(
                    field.name(),
                    DataType::Timestamp(TimeUnit::Millisecond, Some("+00:00".into())),
                    field.is_nullable(),
                ));
                columns.push(std::sync::Arc::new(relabelled) as arrow_array::ArrayRef);
            }
            None => {
                fields.push(field.as_ref().clone());
                columns.push(column.clone());
            }
        }
    }
    RecordBatch::try_new(std::sync::Arc::new(Schema::new(fields)), columns).expect("same columns")
}

impl Table {
    /// The column rows are placed in time by (`window_end` for the dataflow's tables); `None`
    /// for `rejects`.
    pub fn time_column(self) -> Option<&'static str> {
        match self {
            Table::ServiceFeedback => Some("observed_at"),
            Table::Rejects => None,
            _ => Some("window_end"),
        }
    }

    /// Written by the dataflow's sinks (`service_feedback` is the server's, `rejects` the
    /// readers').
    pub fn from_dataflow(self) -> bool {
        !matches!(self, Table::ServiceFeedback | Table::Rejects)
    }

    /// The table named `name` (its directory name).
    pub fn from_name(name: &str) -> Option<Table> {
        Table::ALL.into_iter().find(|t| t.name() == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use personaflow_operators::window::features::NUM_FEATURES;
    use std::fmt::Write as _;

    /// Every table's columns: name, Arrow type, nullability.
    fn schema_snapshot() -> String {
        let mut out = String::new();
        let schemas = Table::ALL
            .iter()
            .map(|t| (t.name(), t.schema()))
            .chain([(LateRow::NAME, LateRow::schema())]);
        for (name, schema) in schemas {
            writeln!(out, "{name}").unwrap();
            for f in schema.fields() {
                let null = if f.is_nullable() { " (nullable)" } else { "" };
                writeln!(out, "  {}: {:?}{null}", f.name(), f.data_type()).unwrap();
            }
        }
        out
    }

    #[test]
    fn schemas_match_the_snapshot() {
        // PERSONAFLOW_UPDATE_SNAPSHOTS=1 rewrites it; a change of an output schema is a change
        // users see, so it shows in the diff of `schemas.snapshot`.
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/tables/schemas.snapshot");
        let now = schema_snapshot();
        if std::env::var_os("PERSONAFLOW_UPDATE_SNAPSHOTS").is_some() {
            std::fs::write(&path, &now).unwrap();
        }
        let before = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            now,
            before,
            "the output schemas changed: see {}",
            path.display()
        );
    }

    #[test]
    fn the_readme_lists_every_table_and_its_columns() {
        let readme =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md"))
                .unwrap();
        for table in Table::ALL {
            let line = readme
                .lines()
                .find(|l| l.starts_with(&format!("| `{}` |", table.name())))
                .unwrap_or_else(|| panic!("README's table of tables lacks {}", table.name()));
            let schema = table.schema();
            let columns = schema.fields().iter().map(|f| f.name().as_str());
            let columns: Vec<&str> = if table == Table::Features {
                // The feature columns are described as the schema's features.
                assert!(
                    line.contains(&format!("the {NUM_FEATURES} features")),
                    "{line}"
                );
                columns.take(schema.fields().len() - NUM_FEATURES).collect()
            } else {
                columns.collect()
            };
            for column in columns {
                assert!(
                    line.contains(&format!("`{column}`")),
                    "README's row of {} lacks `{column}`",
                    table.name()
                );
            }
        }
    }

    #[test]
    fn every_batch_matches_its_schema() {
        let f = FeatureRow::to_batch(&[FeatureRow {
            window_end: 60_000,
            user_id: "u".into(),
            events: 3,
            bytes: 300,
            authenticated: false,
            segment: None,
            history_windows: 0,
            values: vec![1.0; NUM_FEATURES - 1],
        }]);
        assert_eq!(f.num_columns(), 7 + NUM_FEATURES);
        assert_eq!(f.schema(), Table::Features.schema());
        let last = f.column(f.num_columns() - 1);
        let last = last
            .as_any()
            .downcast_ref::<arrow_array::Float32Array>()
            .unwrap();
        assert_eq!(last.value(0), 0.0, "a missing feature value is 0");
        let p = ProfileRow::to_batch(&[ProfileRow {
            window_end: 60_000,
            user_id: "u".into(),
            embedder: "e".into(),
            embedding: vec![0.5, 0.25],
            anomaly_score: None,
            history_windows: 2,
            events: 1,
            authenticated: true,
            segment: Some("gamer".into()),
            device: None,
            os: None,
            country: Some("DE".into()),
        }]);
        assert_eq!(p.num_rows(), 1);
        assert_eq!(p.column(4).null_count(), 1);
        assert_eq!(SegmentProfileRow::to_batch(&[]).num_rows(), 0);
        assert_eq!(
            ResonanceRow::to_batch(&[]).schema(),
            Table::Resonance.schema()
        );
        assert_eq!(RejectRow::to_batch(&[]).schema(), Table::Rejects.schema());
        let e = ForecastErrorRow::to_batch(&[ForecastErrorRow::new(
            180_000,
            "u".into(),
            "lstm-v1".into(),
            60_000,
            2,
            (1.5, 3),
            (900.0, 1000),
        )]);
        let col = |name: &str| e.column(e.schema().index_of(name).unwrap()).clone();
        let abs = col("abs_error_bytes");
        let abs = abs
            .as_any()
            .downcast_ref::<arrow_array::Float64Array>()
            .unwrap();
        assert_eq!(abs.value(0), 100.0);
        let abs = col("abs_error_requests");
        let abs = abs
            .as_any()
            .downcast_ref::<arrow_array::Float64Array>()
            .unwrap();
        assert_eq!(abs.value(0), 1.5);
        let personas = PersonaRow::to_batch(&[PersonaRow {
            window_end: 60_000,
            persona_id: 1,
            size: 2,
            personas: 3,
            reselected: false,
            centroid: vec![0.0; 4],
            top_features: vec!["a".into(), "b".into()],
            top_feature_z: vec![1.0, -1.0],
        }]);
        let names = personas
            .column(6)
            .as_any()
            .downcast_ref::<arrow_array::ListArray>()
            .unwrap();
        assert_eq!(names.value(0).len(), 2);
    }

    #[test]
    fn column_names_are_unique_in_every_table() {
        // Regression: `features` once had both the `events` count and an `events` feature,
        // which pyarrow and DuckDB refuse to read.
        for table in Table::ALL {
            let schema = table.schema();
            let mut names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
            let n = names.len();
            names.sort_unstable();
            names.dedup();
            assert_eq!(names.len(), n, "duplicate column in {}", table.name());
            assert!(!names.contains(&"date"), "`date` is the partition column");
        }
    }

    #[test]
    fn names_round_trip() {
        for table in Table::ALL {
            assert_eq!(Table::from_name(table.name()), Some(table));
        }
        assert_eq!(Table::from_name("late"), None);
    }
}
