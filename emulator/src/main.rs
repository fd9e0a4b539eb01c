//! `sfbulk-emulator [LISTEN]`: the fake org alone, with the demo credentials, until Ctrl-C.

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let mut settings = sfbulk_emulator::Settings::default();
    if let Some(listen) = std::env::args().nth(1) {
        settings.listen = listen;
    }
    let emulator = sfbulk_emulator::Emulator::bind(&settings).await?;
    println!(
        "Salesforce emulator listening on {} (instance_url {})",
        emulator.local_addr(),
        emulator.org().instance_url()
    );
    emulator
        .run_until(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
}
