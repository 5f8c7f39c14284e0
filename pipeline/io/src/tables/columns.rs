//! Column kinds: how a field of a row type becomes Arrow fields and arrays. A table's row type
//! names a kind per field (in `tables/rows.rs`); the kind gives the field's
//! Arrow type and nullability and builds its column.

use arrow_array::builder::{
    BooleanBuilder, Float32Builder, Float64Builder, Int32Builder, Int64Builder, ListBuilder,
    StringBuilder, TimestampMillisecondBuilder, UInt32Builder, UInt64Builder,
};
use arrow_array::ArrayRef;
use arrow_schema::{DataType, Field, TimeUnit};
use personaflow_operators::window::features::{FEATURES, NUM_FEATURES};
use std::sync::Arc;

/// How values of one field of a row type become Arrow columns.
pub trait Column {
    /// The field's Rust type.
    type Value: ?Sized;
    /// What the column is built with.
    type Builder;
    /// The Arrow fields of a row field named `name` (one, except for spread kinds).
    fn fields(name: &str) -> Vec<Field>;
    /// A builder for `rows` rows.
    fn builder(rows: usize) -> Self::Builder;
    /// Appends one row's value.
    fn append(builder: &mut Self::Builder, value: &Self::Value);
    /// The finished columns, in the order of [`fields`](Self::fields).
    fn finish(builder: Self::Builder, columns: &mut Vec<ArrayRef>);
}

/// The `DataType` of timestamps in every table: milliseconds, UTC.
pub fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
}

/// Defines a column kind of one Arrow field built by a primitive-like builder.
macro_rules! scalar_kind {
    ($(#[$m:meta])* $kind:ident, $value:ty, $builder:ty, $data_type:expr, $nullable:expr,
     |$b:ident, $v:ident| $append:expr, |$n:ident| $new:expr) => {
        $(#[$m])*
        #[derive(Debug)]
        pub struct $kind;

        impl Column for $kind {
            type Value = $value;
            type Builder = $builder;
            fn fields(name: &str) -> Vec<Field> {
                vec![Field::new(name, $data_type, $nullable)]
            }
            fn builder($n: usize) -> Self::Builder {
                $new
            }
            fn append($b: &mut Self::Builder, $v: &Self::Value) {
                $append
            }
            fn finish(mut builder: Self::Builder, columns: &mut Vec<ArrayRef>) {
                columns.push(Arc::new(builder.finish()));
            }
        }
    };
}

scalar_kind!(
    /// `i64` milliseconds since the epoch as `Timestamp(Millisecond, "UTC")`.
    Timestamp, i64, TimestampMillisecondBuilder, timestamp_type(), false,
    |b, v| b.append_value(*v), |n| TimestampMillisecondBuilder::with_capacity(n).with_timezone("UTC")
);
scalar_kind!(
    /// Text as `Utf8`: a field of any type that derefs to `str` (`String`, `Arc<str>`).
    Utf8, str, StringBuilder, DataType::Utf8, false,
    |b, v| b.append_value(v), |_n| StringBuilder::new()
);
scalar_kind!(
    /// `Option<String>` as nullable `Utf8`.
    OptUtf8, Option<String>, StringBuilder, DataType::Utf8, true,
    |b, v| b.append_option(v.as_deref()), |_n| StringBuilder::new()
);
scalar_kind!(
    /// `Option<Arc<str>>` (shared text) as nullable `Utf8`.
    OptSharedUtf8, Option<Arc<str>>, StringBuilder, DataType::Utf8, true,
    |b, v| b.append_option(v.as_deref()), |_n| StringBuilder::new()
);
scalar_kind!(
    /// `bool` as `Boolean`.
    Bool, bool, BooleanBuilder, DataType::Boolean, false,
    |b, v| b.append_value(*v), |n| BooleanBuilder::with_capacity(n)
);
scalar_kind!(
    /// `i32` as `Int32`.
    I32, i32, Int32Builder, DataType::Int32, false,
    |b, v| b.append_value(*v), |n| Int32Builder::with_capacity(n)
);
scalar_kind!(
    /// `i64` as `Int64`.
    I64, i64, Int64Builder, DataType::Int64, false,
    |b, v| b.append_value(*v), |n| Int64Builder::with_capacity(n)
);
scalar_kind!(
    /// `u32` as `UInt32`.
    U32, u32, UInt32Builder, DataType::UInt32, false,
    |b, v| b.append_value(*v), |n| UInt32Builder::with_capacity(n)
);
scalar_kind!(
    /// `u64` as `UInt64`.
    U64, u64, UInt64Builder, DataType::UInt64, false,
    |b, v| b.append_value(*v), |n| UInt64Builder::with_capacity(n)
);
scalar_kind!(
    /// `Option<u64>` as nullable `UInt64`.
    OptU64, Option<u64>, UInt64Builder, DataType::UInt64, true,
    |b, v| b.append_option(*v), |n| UInt64Builder::with_capacity(n)
);
scalar_kind!(
    /// `f32` as `Float32`.
    F32, f32, Float32Builder, DataType::Float32, false,
    |b, v| b.append_value(*v), |n| Float32Builder::with_capacity(n)
);
scalar_kind!(
    /// `Option<f32>` as nullable `Float32`.
    OptF32, Option<f32>, Float32Builder, DataType::Float32, true,
    |b, v| b.append_option(*v), |n| Float32Builder::with_capacity(n)
);
scalar_kind!(
    /// `f64` as `Float64`.
    F64, f64, Float64Builder, DataType::Float64, false,
    |b, v| b.append_value(*v), |n| Float64Builder::with_capacity(n)
);

/// The field of a list's items: `item`, nullable (Arrow's convention).
fn item_field(data_type: DataType) -> Arc<Field> {
    Arc::new(Field::new("item", data_type, true))
}

/// Defines a column kind of a non-null list of non-null items.
macro_rules! list_kind {
    ($(#[$m:meta])* $kind:ident, $item:ty, $values:ty, $data_type:expr, |$b:ident, $v:ident| $append:expr) => {
        $(#[$m])*
        #[derive(Debug)]
        pub struct $kind;

        impl Column for $kind {
            type Value = Vec<$item>;
            type Builder = ListBuilder<$values>;
            fn fields(name: &str) -> Vec<Field> {
                vec![Field::new(name, DataType::List(item_field($data_type)), false)]
            }
            fn builder(n: usize) -> Self::Builder {
                ListBuilder::with_capacity(<$values>::new(), n).with_field(item_field($data_type))
            }
            fn append(builder: &mut Self::Builder, value: &Self::Value) {
                let $b = builder.values();
                let $v = value;
                $append;
                builder.append(true);
            }
            fn finish(mut builder: Self::Builder, columns: &mut Vec<ArrayRef>) {
                columns.push(Arc::new(builder.finish()));
            }
        }
    };
}

list_kind!(
    /// `Vec<f32>` as `List<Float32>`.
    ListF32, f32, Float32Builder, DataType::Float32, |b, v| b.append_slice(v)
);
list_kind!(
    /// `Vec<u32>` as `List<UInt32>`.
    ListU32, u32, UInt32Builder, DataType::UInt32, |b, v| b.append_slice(v)
);
list_kind!(
    /// `Vec<String>` as `List<Utf8>`.
    ListUtf8, String, StringBuilder, DataType::Utf8, |b, v| for s in v { b.append_value(s) }
);
list_kind!(
    /// `Vec<Arc<str>>` (shared text) as `List<Utf8>`.
    ListSharedUtf8, Arc<str>, StringBuilder, DataType::Utf8, |b, v| for s in v { b.append_value(s) }
);

/// The window's feature values (`Vec<f32>` of [`NUM_FEATURES`]) spread over one `Float32`
/// column per feature, named as in [`FEATURES`]; missing values are 0.
#[derive(Debug)]
pub struct Features;

impl Column for Features {
    type Value = Vec<f32>;
    type Builder = Vec<Float32Builder>;
    fn fields(_name: &str) -> Vec<Field> {
        FEATURES
            .iter()
            .map(|d| Field::new(d.name, DataType::Float32, false))
            .collect()
    }
    fn builder(n: usize) -> Self::Builder {
        (0..NUM_FEATURES)
            .map(|_| Float32Builder::with_capacity(n))
            .collect()
    }
    fn append(builder: &mut Self::Builder, value: &Self::Value) {
        for (b, v) in builder
            .iter_mut()
            .zip(value.iter().chain(std::iter::repeat(&0.0)))
        {
            b.append_value(*v);
        }
    }
    fn finish(builder: Self::Builder, columns: &mut Vec<ArrayRef>) {
        columns.extend(
            builder
                .into_iter()
                .map(|mut b| Arc::new(b.finish()) as ArrayRef),
        );
    }
}
