//! What Microsoft Graph sends, read into the gateway's models: user and contact pages (delta
//! pages included) and `$batch` answers never panic, whatever the bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ms365_gateway::graph::BatchResponse;
use ms365_gateway::graph::{Contact, Page, User};

fuzz_target!(|data: &[u8]| {
    let _ = serde_json::from_slice::<Page<User>>(data);
    let _ = serde_json::from_slice::<Page<Contact>>(data);
    if let Ok(items) = serde_json::from_slice::<Vec<BatchResponse>>(data) {
        for item in &items {
            let _ = item.is_success();
            let _ = item.error_code();
            let _ = item.is_no_mailbox();
            let _ = item.retry_after();
            let _ = item.binary_body();
            let _ = item.header("Content-Type");
        }
    }
});
