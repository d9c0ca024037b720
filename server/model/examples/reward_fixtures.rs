//! Write the tiny reward models of `hhh_model::testing::RewardFixture` (config and weights) under
//! the directory given, one subdirectory each; used by `scripts/make_reward_goldens.py`.

fn main() {
    let out = std::path::PathBuf::from(std::env::args().nth(1).expect("usage: reward_fixtures OUT_DIR"));
    for f in [hhh_model::testing::RewardFixture::SeqCls, hhh_model::testing::RewardFixture::OpenRlhf] {
        let dir = out.join(f.name());
        f.write(&dir).unwrap_or_else(|e| panic!("writing {}: {e}", dir.display()));
        println!("{}", dir.display());
    }
}
