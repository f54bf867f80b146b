//! The configuration loader: any TOML document is either a configuration or an error that
//! names the file; it never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = std::path::Path::new("fuzz.toml");
    if let Err(e) = ms365_gateway::Config::from_toml(path, text, Vec::new()) {
        assert!(e.to_string().contains("fuzz.toml"), "{e}");
    }
});
