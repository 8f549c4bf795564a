#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| pias_proto::fuzzing::ip_packet(data));
