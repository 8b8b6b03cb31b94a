//! Shared by the archive reader targets.
/// Reads every entry the way extraction would, bounded so that a
/// decompression bomb cannot exhaust the fuzzer's memory.
pub fn read_all(bytes: &[u8], format: bundle::BundleFormat) {
    use std::io::Read;
    let mut budget: u64 = 16 * 1024 * 1024;
    let _ = bundle::read::visit_reader(
        std::io::Cursor::new(bytes),
        format,
        std::path::Path::new("fuzz"),
        &mut |entry, content| {
            let _ = bundle::extract::normalize_name(entry);
            let mut sink = Vec::new();
            let read = content
                .take(budget.min(1024 * 1024))
                .read_to_end(&mut sink)
                .unwrap_or(0) as u64;
            budget = budget.saturating_sub(read);
            Ok(())
        },
    );
}
