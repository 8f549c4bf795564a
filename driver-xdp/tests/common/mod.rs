//! Shared by the test files that run the program: each test once per hook.

/// Turns test functions `fn name(hook: Hook)` into `xdp::name` and `tc::name` tests: the one C source built
/// for XDP and for TC ingress must make the same decisions and emit the same bytes.
macro_rules! on_each_hook {
    ($($name:ident),* $(,)?) => {
        mod xdp {
            $(#[test]
            fn $name() {
                super::$name(driver_xdp::Hook::Xdp)
            })*
        }
        mod tc {
            $(#[test]
            fn $name() {
                super::$name(driver_xdp::Hook::Tc)
            })*
        }
    };
}
