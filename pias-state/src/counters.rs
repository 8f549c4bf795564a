//! One definition per counters struct: [`counters!`] writes the struct (every field a `u64`) together with
//! the list of its exported names and a walk over `(name, value)`, so a counter added to a struct is
//! exported by `pias ctl counters` and `/metrics` without a second list to keep in step.
//!
//! A field is exported as the struct's prefix followed by the field name, unless it gives its own name
//! (`field as "name"`): that keeps names operators and tests already read (`reg_bad_mac`, `reports_sent`)
//! stable. Names are Prometheus-safe (`[a-z_][a-z0-9_]*`); the proxy's tests check it, and that no two
//! counters of a proxy share a name.

/// Defines a counters struct. See the module documentation.
///
/// ```text
/// counters! {
///     /// Doc of the struct.
///     #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
///     pub struct ExampleCounters("example_") {
///         /// Exported as `example_hits`.
///         hits,
///         /// Exported as `legacy_name`.
///         misses as "legacy_name",
///     }
/// }
/// ```
macro_rules! counters {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident($prefix:literal) {
            $(
                $(#[$fmeta:meta])*
                $field:ident $(as $export:literal)?
            ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        $vis struct $name {
            $(
                $(#[$fmeta])*
                $vis $field: u64,
            )*
        }

        impl $name {
            /// The exported name of every counter, in [`Self::for_each`] order.
            $vis const NAMES: &'static [&'static str] = &[$(counters!(@name $prefix, $field $(, $export)?)),*];

            /// Walks every counter as `(exported name, value)`.
            $vis fn for_each(&self, f: &mut dyn FnMut(&'static str, u64)) {
                $( f(counters!(@name $prefix, $field $(, $export)?), self.$field); )*
            }
        }
    };
    (@name $prefix:literal, $field:ident) => {
        concat!($prefix, stringify!($field))
    };
    (@name $prefix:literal, $field:ident, $export:literal) => {
        $export
    };
}

/// Whether `name` is a valid Prometheus metric name in the form the proxy exports (lower case).
#[cfg(test)]
pub(crate) fn prometheus_safe(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

#[cfg(test)]
mod tests {
    counters! {
        #[derive(Debug, Default)]
        struct Example("ex_") {
            /// Doc comments pass through.
            hits,
            misses as "legacy_misses",
        }
    }

    #[test]
    fn names_and_walk_agree() {
        let c = Example { hits: 3, misses: 4 };
        assert_eq!(Example::NAMES, &["ex_hits", "legacy_misses"]);
        let mut seen = Vec::new();
        c.for_each(&mut |n, v| seen.push((n, v)));
        assert_eq!(seen, [("ex_hits", 3), ("legacy_misses", 4)]);
        assert!(super::prometheus_safe("ex_hits"));
        assert!(
            !super::prometheus_safe("ex-hits")
                && !super::prometheus_safe("1x")
                && !super::prometheus_safe("")
        );
    }
}
