#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| pias_state::fuzzing::replay_control(data));
