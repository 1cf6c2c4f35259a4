//! loadgen: the load generator and backend simulator bundled with sluice.
fn main() {
    println!("loadgen: not yet implemented");
}
