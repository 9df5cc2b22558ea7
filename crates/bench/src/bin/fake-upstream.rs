//! Runs the test kit's fake OpenAI-compatible upstream as a process, for load
//! runs: `fake-upstream` prints its base URL and serves until killed.

use karen_testkit::fake_llm::FakeLlm;

#[tokio::main]
async fn main() {
    let fake = FakeLlm::start().await;
    println!("{}", fake.base_url());
    // Serve until the process is killed.
    std::future::pending::<()>().await;
    drop(fake);
}
