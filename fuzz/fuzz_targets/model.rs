#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| openai_proxy_fuzz::model(data));
