//! One module per subcommand; `run` dispatches and `exit_code` maps errors to exit codes.

pub(crate) mod bench;
pub(crate) mod client;
pub(crate) mod demo;
mod failover;
pub(crate) mod output;
mod runtime;
mod serve;

use anyhow::Context as _;

use crate::cli::{Cli, Command, ConfigCommand, TokenCommand};
use crate::cmd::output::{out, outln};
use crate::config::{Config, ConfigError, EXAMPLE};

/// How a command that does not read the configuration logs when neither `RUST_LOG` nor
/// `CCM_LOG__LEVEL` says otherwise: the simulator like a server, the others (whose output is a
/// report or a table) only warnings.
fn default_log_level(command: &Command) -> &'static str {
    match command {
        Command::Sim(_) => "info",
        _ => "warn",
    }
}

/// Runs the parsed command line.
pub(crate) fn run(cli: Cli) -> anyhow::Result<()> {
    // `serve` and `demo` log as their configuration says (loaded below); the rest now.
    if !matches!(cli.command, Command::Serve | Command::Demo(_)) {
        runtime::init_tracing(
            &runtime::env_log_config(default_log_level(&cli.command))?,
            &crate::telemetry::TelemetryConfig::default(),
        )?;
    }
    match cli.command {
        Command::Config(ConfigCommand::Example) => {
            out!("{EXAMPLE}");
            Ok(())
        }
        Command::Token(TokenCommand::New { ref name, role }) => {
            let token = ccm_api::generate_token();
            outln!("token (shown once): {token}");
            outln!(
                "[[auth.tokens]]\nname = {name:?}\nrole = {:?}\nsha256 = {:?}",
                role.0.as_str(),
                ccm_api::hash_token(&token)
            );
            Ok(())
        }
        Command::Token(TokenCommand::Hash) => {
            let mut text = String::new();
            std::io::stdin().read_line(&mut text)?;
            let token = text.trim();
            if token.is_empty() {
                anyhow::bail!("no token on standard input");
            }
            outln!("{}", ccm_api::hash_token(token));
            Ok(())
        }
        Command::Config(ConfigCommand::Check) => {
            let config = load_config(&cli)?;
            out!("{}", toml::to_string_pretty(&config)?);
            Ok(())
        }
        Command::Serve => {
            let config = load_config(&cli)?;
            let telemetry = runtime::init_tracing(&config.log, &config.telemetry)?;
            let runtimes = runtime::Runtimes::build(&config)?;
            let outcome = runtimes.run(std::time::Duration::from_secs(1), |engine| {
                serve::run(config, engine)
            });
            drop(telemetry);
            outcome
        }
        Command::Demo(ref args) => {
            let config = load_config(&cli)?;
            let telemetry = runtime::init_tracing(&config.log, &config.telemetry)?;
            let runtimes = runtime::Runtimes::build(&config)?;
            let outcome = runtimes.run(std::time::Duration::from_secs(1), |engine| {
                demo::run(args.clone(), config, engine)
            });
            drop(telemetry);
            outcome
        }
        Command::Sim(args) => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            let launcher = sim_launcher()?;
            let outcome = runtime.block_on(ccm_cml_sim::cli::run(*args, &launcher));
            // A shard child may still have a blocking read on stdin; do not wait for it.
            runtime.shutdown_timeout(std::time::Duration::from_secs(1));
            Ok(outcome?)
        }
        Command::Bench(cmd) => bench::run(cmd),
        Command::Workers(cmd) => client::workers(cmd),
        Command::Labs(cmd) => client::labs(cmd),
        Command::Licence(cmd) => client::licence(cmd),
        Command::System(cmd) => client::system(cmd),
        Command::Events(cmd) => client::events(cmd),
    }
}

/// How the simulator starts itself again in a child process: this executable's `sim`
/// command (shards of `ccm sim`, the simulator of `ccm bench sync`).
pub(crate) fn sim_launcher() -> anyhow::Result<ccm_cml_sim::SimLauncher> {
    let exe = std::env::current_exe().context("cannot find the ccm executable")?;
    Ok(ccm_cml_sim::SimLauncher::new(exe).arg("sim"))
}

/// Loads the configuration named on the command line (or none) plus the environment.
pub(crate) fn load_config(cli: &Cli) -> Result<Config, ConfigError> {
    Config::load(cli.config.as_deref(), std::env::vars())
}

/// The exit code for a failure: 64 (EX_USAGE) for configuration errors, 1 otherwise.
pub(crate) fn exit_code(err: &anyhow::Error) -> u8 {
    if let Some(e) = err.downcast_ref::<client::ApiFailure>() {
        return e.exit_code();
    }
    if err.downcast_ref::<ConfigError>().is_some() {
        64
    } else {
        1
    }
}
