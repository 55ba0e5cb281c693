//! The client subcommands' command lines: `deploy` and `functions`.

use std::path::PathBuf;

use clap::{Args, Subcommand};

/// Where the admin listener is and how to print.
#[derive(Debug, Clone, Args)]
pub struct Target {
    /// The admin listener's URL (`--admin-listen` of the server), e.g.
    /// http://127.0.0.1:9464. The token comes from WASMBOX_ADMIN_TOKEN.
    #[arg(long, env = "WASMBOX_ADMIN_URL")]
    pub url: String,
    /// Print the server's JSON instead of a human-readable summary.
    #[arg(long)]
    pub json: bool,
}

/// `wasmbox deploy FILE`.
#[derive(Debug, Clone, Args)]
pub struct DeployArgs {
    /// The module (binary .wasm) to deploy.
    pub file: PathBuf,
    /// The function's name [default: FILE's name without its extension].
    #[arg(long)]
    pub name: Option<String>,
    /// Also deploy this manifest (NAME.toml), before the module.
    #[arg(long)]
    pub manifest: Option<PathBuf>,
    /// Deploy only if the function's current module has this sha256 (as
    /// `functions list` shows it); `none`: only if there is none yet.
    #[arg(long)]
    pub if_match: Option<String>,
    #[command(flatten)]
    pub target: Target,
}

/// `wasmbox functions ...`.
#[derive(Debug, Clone, Args)]
pub struct FunctionsArgs {
    #[command(subcommand)]
    pub command: FunctionsCommand,
}

/// What `wasmbox functions` does.
#[derive(Debug, Clone, Subcommand)]
pub enum FunctionsCommand {
    /// List the functions with their size, hash, state and usage.
    List {
        #[command(flatten)]
        target: Target,
    },
    /// Delete a function (its module files and its manifest).
    Rm {
        /// The function's name.
        name: String,
        /// Delete only if its module has this sha256.
        #[arg(long)]
        if_match: Option<String>,
        #[command(flatten)]
        target: Target,
    },
}
