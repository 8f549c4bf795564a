#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| pias_state::fuzzing::proxy_events(data));
