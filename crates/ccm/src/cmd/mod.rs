//! One module per subcommand; `run` dispatches and `exit_code` maps errors to exit codes.

pub(crate) mod bench;
pub(crate) mod client;
pub(crate) mod demo;
mod runtime;
mod serve;

use crate::cli::{Cli, Command, ConfigCommand, TokenCommand};
use crate::config::{Config, ConfigError, EXAMPLE};

/// Runs the parsed command line.
pub(crate) fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Config(ConfigCommand::Example) => {
            print!("{EXAMPLE}");
            Ok(())
        }
        Command::Token(TokenCommand::New { ref name, ref role }) => {
            let token = ccm_api::generate_token();
            println!("token (shown once): {token}");
            println!(
                "[[auth.tokens]]\nname = {name:?}\nrole = {role:?}\nsha256 = {:?}",
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
            println!("{}", ccm_api::hash_token(token));
            Ok(())
        }
        Command::Config(ConfigCommand::Check) => {
            let config = load_config(&cli)?;
            print!("{}", toml::to_string_pretty(&config)?);
            Ok(())
        }
        Command::Serve => {
            let config = load_config(&cli)?;
            let telemetry = runtime::init_tracing(&config.log, &config.telemetry)?;
            let outcome = runtime::build()?.block_on(serve::run(config));
            drop(telemetry);
            outcome
        }
        Command::Demo(ref args) => {
            let config = load_config(&cli)?;
            let telemetry = runtime::init_tracing(&config.log, &config.telemetry)?;
            let outcome = runtime::build()?.block_on(demo::run(args.clone(), config));
            drop(telemetry);
            outcome
        }
        Command::Sim(args) => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            let outcome = runtime.block_on(ccm_cml_sim::cli::run(*args));
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
