//! Makes baton's man pages and shell completion scripts from the same clap
//! definitions the binary parses with (`src/cli/args.rs`), into `OUT_DIR`;
//! the binary embeds them as text (`baton completions`, `baton man`), so
//! neither generator is linked into a program that starts once per job.
#![allow(dead_code)]

use std::path::Path;

use clap::CommandFactory;

include!("src/cli/args.rs");

fn main() {
    println!("cargo:rerun-if-changed=src/cli/args.rs");
    println!("cargo:rerun-if-changed=build.rs");
    let out = std::env::var_os("OUT_DIR").expect("OUT_DIR");
    let out = Path::new(&out);
    for (shell, file) in [
        (clap_complete::Shell::Bash, "baton.bash"),
        (clap_complete::Shell::Zsh, "_baton"),
        (clap_complete::Shell::Fish, "baton.fish"),
    ] {
        let mut script = Vec::new();
        clap_complete::generate(shell, &mut Cli::command(), "baton", &mut script);
        std::fs::write(out.join(file), script).expect("writing a completion script");
    }
    let mut top = Cli::command();
    top.build();
    let mut pages: Vec<(String, clap::Command)> = top
        .get_subcommands()
        .filter(|c| !c.is_hide_set() && c.get_name() != "help")
        .map(|c| {
            let name = format!("baton-{}", c.get_name());
            (name.clone(), c.clone().name(name))
        })
        .collect();
    pages.push(("baton".into(), top));
    let mut index = String::from("&[\n");
    for (name, cmd) in pages {
        let mut page = Vec::new();
        clap_mangen::Man::new(cmd)
            .render(&mut page)
            .expect("rendering a man page");
        std::fs::write(out.join(format!("{name}.1")), page).expect("writing a man page");
        index += &format!(
            "    (\"{name}.1\", include_str!(concat!(env!(\"OUT_DIR\"), \"/{name}.1\"))),\n"
        );
    }
    index += "]\n";
    std::fs::write(out.join("man_pages.rs"), index).expect("writing the man page index");
}
