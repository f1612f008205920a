//! The built-in catalogs (`--catalog builtin:NAME`): ordinary job lists for the minion group, run
//! by the same engine as any catalog. They use the `ingot` variables (defaults set by
//! `ingot bootstrap`, overridable in any catalog and per target under `ingot:`):
//! `exe` (the running binary), `master_dir`, `master_address` (HOST:PORT the minions connect
//! to), `remote_exe`, `minion_dir`, `service`, `service_manager` (auto, systemd, runit),
//! `sv_dir`, `runit_dir`, `machine_id`, `workdir` (a private temp dir on the operator machine).

/// Copies the binary, issues and installs the certificate, installs and starts the service.
const INSTALL: &str = r#"
ingot_minions:
  jobs:
  - RUN: mkdir -p '{{ ingot.minion_dir }}/certs' "$(dirname '{{ ingot.remote_exe }}')"
  - @BINARY@
  - RUN: "'{{ ingot.remote_exe }}' init minion '{{ ingot.minion_dir }}'"
  - @CERTS@
  - RUN: |
      set -e
      S='{{ ingot.service }}'
      if [ '{{ ingot.service_manager }}' = systemd ] || { [ '{{ ingot.service_manager }}' = auto ] && [ -d /run/systemd/system ]; }; then
        '{{ ingot.remote_exe }}' systemd-unit minion --minion-dir '{{ ingot.minion_dir }}' --address '{{ ingot.master_address }}' > "/etc/systemd/system/$S.service"
        systemctl daemon-reload
        systemctl enable "$S"
        systemctl restart "$S"
      else
        command -v runsv >/dev/null || { echo "neither systemd (as PID 1) nor runit (runsv) is here: install runit, or set ingot.service_manager" >&2; exit 1; }
        D='{{ ingot.sv_dir }}'/"$S"
        mkdir -p "$D" '{{ ingot.runit_dir }}'
        cat > "$D/run.new" <<'INGOT_EOF'
      #!/bin/sh
      exec 2>&1
      exec '{{ ingot.remote_exe }}' minion serve --minion '{{ ingot.minion_dir }}' --master '{{ ingot.master_address }}'{% if ingot.machine_id %} --machine-id '{{ ingot.machine_id }}'{% endif %}
      INGOT_EOF
        chmod 0755 "$D/run.new"
        mv -f "$D/run.new" "$D/run"
        ln -sfn "$D" '{{ ingot.runit_dir }}'/"$S"
        # runsvdir picks a new service up within 5 s; an existing one restarts now.
        sv restart '{{ ingot.runit_dir }}'/"$S" >/dev/null 2>&1 || true
      fi
"#;

/// Re-issues every minion's certificate and restarts its agent.
const ROTATE: &str = r#"
ingot_minions:
  jobs:
  - @CERTS@
  - @RESTART@
"#;

/// Ships the running binary and restarts the agent.
const UPGRADE: &str = r#"
ingot_minions:
  jobs:
  - @BINARY@
  - @RESTART@
"#;

const BINARY: &str = r#"ADD: "'{{ ingot.exe }}' '{{ ingot.remote_exe }}.new'"
  - RUN: chmod 0755 '{{ ingot.remote_exe }}.new' && mv -f '{{ ingot.remote_exe }}.new' '{{ ingot.remote_exe }}'"#;

const CERTS: &str = r#"LOCAL: "'{{ ingot.exe }}' certs --master '{{ ingot.master_dir }}' issue '{{ ingot_bootstrap.name }}' --out '{{ ingot.workdir }}/{{ ingot_bootstrap.name }}'"
  - ADD: "'{{ ingot.workdir }}/{{ ingot_bootstrap.name }}/ca.crt' '{{ ingot.minion_dir }}/certs/ca.crt'"
  - ADD: "'{{ ingot.workdir }}/{{ ingot_bootstrap.name }}/minion.crt' '{{ ingot.minion_dir }}/certs/minion.crt'"
  - ADD: "'{{ ingot.workdir }}/{{ ingot_bootstrap.name }}/minion.key' '{{ ingot.minion_dir }}/certs/minion.key.new'"
  - RUN: chmod 0600 '{{ ingot.minion_dir }}/certs/minion.key.new' && mv -f '{{ ingot.minion_dir }}/certs/minion.key.new' '{{ ingot.minion_dir }}/certs/minion.key'"#;

const RESTART: &str = r#"RUN: |
      S='{{ ingot.service }}'
      if [ '{{ ingot.service_manager }}' = systemd ] || { [ '{{ ingot.service_manager }}' = auto ] && [ -d /run/systemd/system ]; }; then
        systemctl restart "$S"
      else
        sv restart '{{ ingot.runit_dir }}'/"$S"
      fi"#;

/// The text of built-in catalog `name`.
pub fn catalog(name: &str) -> Option<String> {
    let t = match name {
        "install" => INSTALL,
        "rotate" => ROTATE,
        "upgrade" => UPGRADE,
        _ => return None,
    };
    Some(
        t.replace("@BINARY@", BINARY)
            .replace("@CERTS@", CERTS)
            .replace("@RESTART@", RESTART),
    )
}

/// The built-ins that need `ingot.master_address`.
pub fn needs_master_address(name: &str) -> bool {
    name == "install"
}
