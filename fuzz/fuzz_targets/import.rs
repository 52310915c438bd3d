//! Models mutated at the protobuf level, run through bnnc's `import` stage (see `bnnc_fuzz::stage`).
#![no_main]

bnnc_fuzz::fuzz_stage!(bnnc_fuzz::Stage::Import);
