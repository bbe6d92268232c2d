//! `refinery::embed_migrations!` reads `migrations/` at compile time; without this, cargo
//! would not rebuild when a migration is added or edited.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
