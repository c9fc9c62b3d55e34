//! `sluice completions SHELL` and `sluice man`: generated from the command line
//! definition, so they list every subcommand; the bash script is loaded by a real
//! bash and the man page rendered by a real groff.

use std::process::{Command, Stdio};

use crate::common::sluice_bin;

const SUBCOMMANDS: [&str; 6] = ["run", "validate", "buffer", "tenant", "completions", "man"];

fn sluice_stdout(args: &[&str]) -> String {
    let out = Command::new(sluice_bin())
        .args(args)
        .output()
        .expect("run sluice");
    assert!(
        out.status.success(),
        "sluice {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

#[test]
fn bash_loads_the_completion_script_and_it_knows_every_subcommand() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let script = tmp.path().join("sluice.bash");
    std::fs::write(&script, sluice_stdout(&["completions", "bash"])).expect("write");
    // Load it, then ask the completion function what follows `sluice `.
    let probe = format!(
        "set -e; source '{}'; complete -p sluice; \
         COMP_WORDS=(sluice ''); COMP_CWORD=1; COMP_LINE='sluice '; COMP_POINT=7; \
         _sluice sluice '' sluice; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        script.display()
    );
    let out = Command::new("bash")
        .args(["--norc", "--noprofile", "-c", &probe])
        .stdin(Stdio::null())
        .output()
        .expect("bash");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let offered: Vec<&str> = text.lines().collect();
    for sub in SUBCOMMANDS {
        assert!(offered.contains(&sub), "`{sub}` not offered: {offered:?}");
    }
}

#[test]
fn zsh_and_fish_scripts_name_every_subcommand() {
    for shell in ["zsh", "fish"] {
        let script = sluice_stdout(&["completions", shell]);
        for sub in SUBCOMMANDS {
            assert!(script.contains(sub), "{shell}: no `{sub}`");
        }
    }
    let out = Command::new(sluice_bin())
        .args(["completions", "tcsh"])
        .output()
        .expect("run sluice");
    assert_eq!(
        out.status.code(),
        Some(2),
        "an unknown shell is a usage error"
    );
}

#[test]
fn groff_renders_the_man_page_without_warnings() {
    let page = sluice_stdout(&["man"]);
    assert!(page.contains(".TH sluice 1"), "{page}");
    let tmp = tempfile::tempdir().expect("temp dir");
    let file = tmp.path().join("sluice.1");
    std::fs::write(&file, &page).expect("write");
    // Plain ASCII: no SGR, no overstriking, `\-` as `-`.
    let out = Command::new("groff")
        .args(["-man", "-Tascii", "-P-cbou", "-ww"])
        .arg(&file)
        .output()
        .expect("groff (scripts/install-deps.sh installs groff-base)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stderr.is_empty(), "{stderr}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("SUBCOMMANDS"), "{text}");
    for sub in SUBCOMMANDS {
        assert!(
            text.contains(&format!("sluice-{sub}")),
            "no sluice-{sub} in:\n{text}"
        );
    }
}
