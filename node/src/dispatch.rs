//! Runs one parsed `gtc` command line: picks the verb's module, prints its
//! report or error in the verb's format, and returns the exit code.

use clap::CommandFactory;

use crate::cli::{self, Cli, TopCommand};
use crate::output::{self, print_error, print_report};
use crate::{bundle_cmd, cluster_cmd, demo_cmd, node_cmd, op, token_cmd, trust_cmd};

/// Runs `cli` and returns the process's exit code.
pub fn run(cli: Cli) -> i32 {
    let code = match cli.command {
        TopCommand::Completions { shell } => {
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "gtc", &mut script);
            output::write_stdout(&script);
            0
        }
        TopCommand::Demo(args) => match demo_cmd::run(args) {
            Ok(code) => code,
            Err(error) => {
                print_error("demo", "run", &error, cli::OutputFormat::Table);
                error.exit_code()
            }
        },
        TopCommand::Node(cli::NodeVerb::Token(verb)) => {
            let name = token_cmd::verb_name(&verb);
            match token_cmd::run(verb) {
                Ok(report) => {
                    print_report(&report, cli::OutputFormat::Json);
                    0
                }
                Err(error) => {
                    print_error("token", name, &error, cli::OutputFormat::Json);
                    error.exit_code()
                }
            }
        }
        TopCommand::Node(cli::NodeVerb::Health { admin }) => node_cmd::health(admin),
        TopCommand::Operator(cli::OperatorNoun::Key(verb)) => {
            let name = trust_cmd::operator_key_verb(&verb);
            match trust_cmd::operator_key(verb) {
                Ok(report) => {
                    print_report(&report, cli::OutputFormat::Json);
                    0
                }
                Err(error) => {
                    print_error("operator-key", name, &error, cli::OutputFormat::Json);
                    error.exit_code()
                }
            }
        }
        TopCommand::Node(cli::NodeVerb::Run(args)) => {
            let store_root = args.store_root.clone();
            match node_cmd::run(*args, store_root) {
                Ok(()) => 0,
                Err(error) => {
                    print_error("node", "run", &error, cli::OutputFormat::Json);
                    error.exit_code()
                }
            }
        }
        TopCommand::Cluster(verb) => {
            let name = match &verb {
                cli::ClusterVerb::Init { .. } => "init",
                cli::ClusterVerb::IssueCert { .. } => "issue-cert",
                cli::ClusterVerb::Status { .. } => "status",
                cli::ClusterVerb::Leave { .. } => "leave",
                cli::ClusterVerb::Join { .. } => "join",
            };
            match cluster_cmd::run(verb) {
                Ok(report) => {
                    print_report(&report, cli::OutputFormat::Json);
                    report.exit_code
                }
                Err(error) => {
                    print_error("cluster", name, &error, cli::OutputFormat::Json);
                    error.exit_code()
                }
            }
        }
        TopCommand::Bundle(args) => {
            let format = args.output;
            let verb = match &args.verb {
                cli::BundleVerb::Build { .. } => "build",
                cli::BundleVerb::Inspect { .. } => "inspect",
                cli::BundleVerb::Doctor { .. } => "doctor",
            };
            match bundle_cmd::run(args.verb) {
                Ok(report) => {
                    print_report(&report, format);
                    report.exit_code
                }
                Err(error) => {
                    print_error("bundle", verb, &error, format);
                    error.exit_code()
                }
            }
        }
        TopCommand::Op(args) => {
            let (noun, verb) = op::names(&args.noun);
            let format = args.output;
            match op::run(args) {
                Ok(op::Outcome::Schema(schema)) => {
                    output::outln!(
                        "{}",
                        serde_json::to_string_pretty(&schema).unwrap_or_default()
                    );
                    0
                }
                Ok(op::Outcome::Report(report)) => {
                    print_report(&report, format);
                    report.exit_code
                }
                Err(error) => {
                    print_error(noun, verb, &error, format);
                    error.exit_code()
                }
            }
        }
    };
    output::exit_code(code)
}
