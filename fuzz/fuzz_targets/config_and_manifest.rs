//! Arbitrary text as a config file and as a model manifest: an error or a value, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = affectstream::config::Config::parse(text);
        if let Ok(m) = affectstream::manifest::Manifest::parse(text) {
            for role in m.models.keys() {
                let entry = &m.models[role];
                let _ = affectstream::encode::ImageInputSpec::from_entry(role, entry);
                let _ = affectstream::encode::ClassHead::from_entry(role, entry);
            }
        }
    }
});
