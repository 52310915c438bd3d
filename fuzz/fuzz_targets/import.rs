//! Models mutated at the protobuf level, run through bnnc's `import` stage (see `bnnc_fuzz::stage`).
#![no_main]

use libfuzzer_sys::{fuzz_mutator, fuzz_target, fuzzer_mutate};

fuzz_target!(|bytes: &[u8]| {
    bnnc_fuzz::run(bnnc_fuzz::Stage::Import, bytes);
});

// Mostly structured mutations of a decodable model; sometimes (and for what does not decode)
// libFuzzer's byte mutations, which keep the decoder tested.
fuzz_mutator!(|data: &mut [u8], size: usize, max_size: usize, seed: u32| {
    if !seed.is_multiple_of(4) {
        let mutations = bnnc_fuzz::MUTATIONS_PER_STEP;
        if let Some(out) = bnnc_fuzz::mutate_bytes(&data[..size], seed.into(), mutations, max_size)
        {
            data[..out.len()].copy_from_slice(&out);
            return out.len();
        }
    }
    fuzzer_mutate(data, size, max_size)
});
