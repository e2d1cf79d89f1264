//! `heapdump toparquet`: three dumps of two processes (two of `triggered`
//! growing, written by its growth trigger, and one of `leaks`) exported into
//! one directory are one dataset; DuckDB (the `duckdb` package from PyPI,
//! installed by `scripts/test.sh` into a virtual environment under the target
//! directory) runs every dataset query of `analyze/EXPORTS.md` on it as
//! written there, and each answer is exactly what the `heapdump` command
//! says of the same dumps (`diff --json`, `top --retained --json`,
//! `leaks --json`).

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use heapdump_tests::{binary, heapdump, heapdump_json, run_ok, scratch_dir, workspace_root};
use serde_json::Value;

/// The Python with `duckdb`: `HEAPDUMP_TEST_PYTHON`, else the virtual
/// environment `scripts/test.sh` makes in the target directory (a relative
/// `CARGO_TARGET_DIR` is relative to the workspace root, where the script
/// runs).
fn duckdb_python() -> PathBuf {
    if let Some(python) = std::env::var_os("HEAPDUMP_TEST_PYTHON") {
        return PathBuf::from(python);
    }
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| PathBuf::from("target"), PathBuf::from);
    let target = workspace_root().join(target);
    let python = target.join("python/bin/python3");
    assert!(
        python.exists(),
        "{} is missing: this test needs DuckDB from PyPI, installed by scripts/test.sh \
         (python3 -m venv {}/python && {}/python/bin/pip install duckdb==2.0.1), \
         or set HEAPDUMP_TEST_PYTHON to a Python that has it",
        python.display(),
        target.display(),
        target.display()
    );
    python
}

fn hdumps(dir: &Path) -> Vec<PathBuf> {
    let mut dumps: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension() == Some(OsStr::new("hdump")))
        .collect();
    dumps.sort();
    dumps
}

/// Runs `triggered grow 5` with a growth trigger every 2 MiB: two dumps of
/// one process, the second with two more 1 MiB blocks at one site.
fn growing_process_dumps(dir: &Path) -> (PathBuf, PathBuf) {
    let mut command = Command::new(binary("triggered"));
    command
        .args(["grow", "5"])
        .env(
            "HEAPDUMP",
            format!("dir={},on=growth:2MiB", dir.to_str().unwrap()),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    run_ok(&mut command);
    let deadline = Instant::now() + Duration::from_secs(20);
    while hdumps(dir).len() < 2 {
        assert!(Instant::now() < deadline, "no second growth dump");
        std::thread::sleep(Duration::from_millis(20));
    }
    let dumps = hdumps(dir);
    assert_eq!(dumps.len(), 2, "{dumps:?}");
    (dumps[0].clone(), dumps[1].clone())
}

fn os(path: &Path) -> &OsStr {
    path.as_os_str()
}

/// Every dataset query's rows, by name, as DuckDB answers them.
fn duckdb_answers(dataset: &Path) -> BTreeMap<String, Vec<Vec<Value>>> {
    let script = workspace_root().join("tests/python/duckdb_queries.py");
    let exports = workspace_root().join("analyze/EXPORTS.md");
    let output = run_ok(
        Command::new(duckdb_python())
            .arg(script)
            .arg(exports)
            .arg(dataset),
    );
    let answers: BTreeMap<String, Value> =
        serde_json::from_slice(&output.stdout).expect("the script prints JSON");
    answers
        .into_iter()
        .map(|(name, answer)| {
            let rows = answer["rows"]
                .as_array()
                .unwrap()
                .iter()
                .map(|row| row.as_array().unwrap().clone())
                .collect();
            (name, rows)
        })
        .collect()
}

fn pid_of(dump: &Path) -> u64 {
    heapdump_json(&[OsStr::new("info"), os(dump)])["process"]["pid"]
        .as_u64()
        .unwrap()
}

/// `function:line` as `sites.name` writes a site.
fn site_label(site: &Value) -> String {
    let function = site["function"].as_str().unwrap();
    match site["line"].as_u64() {
        Some(line) => format!("{function}:{line}"),
        None => function.to_owned(),
    }
}

/// The rows the growth queries should give: `diff OLD NEW --json [--by type]`.
fn diff_rows(old: &Path, new: &Path, pid: u64, by_type: bool) -> Vec<Vec<Value>> {
    let mut args = vec![OsStr::new("diff"), os(old), os(new), OsStr::new("-n")];
    args.push(OsStr::new("100000"));
    if by_type {
        args.extend([OsStr::new("--by"), OsStr::new("type")]);
    }
    let diff = heapdump_json(&args);
    let mut rows: Vec<Vec<Value>> = diff["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            let key = if by_type {
                row["type"].as_str().unwrap().to_owned()
            } else {
                site_label(&row["site"])
            };
            vec![
                pid.into(),
                key.into(),
                row["delta_bytes"].clone(),
                row["delta_count"].clone(),
            ]
        })
        .collect();
    // The query's order: bytes changed, biggest first, then the name.
    rows.sort_by(|a, b| {
        (b[2].as_i64().cmp(&a[2].as_i64())).then(a[1].as_str().cmp(&b[1].as_str()))
    });
    rows
}

#[test]
fn dataset_of_two_processes_answers_every_documented_query_as_the_cli_does() {
    let dir = scratch_dir("export_parquet");
    let dumps_dir = dir.join("dumps");
    std::fs::create_dir_all(&dumps_dir).unwrap();
    let (first, second) = growing_process_dumps(&dumps_dir);
    let leaks_dump = dir.join("leaks.hdump");
    run_ok(Command::new(binary("leaks")).arg(&leaks_dump));
    let dataset = dir.join("dataset");
    for dump in [&first, &second, &leaks_dump] {
        heapdump(&[
            OsStr::new("toparquet"),
            os(dump),
            OsStr::new("-o"),
            os(&dataset),
        ]);
    }
    let (grower, leaker) = (pid_of(&second), pid_of(&leaks_dump));
    assert_eq!(pid_of(&first), grower);
    assert!(leaker > 0 && leaker != grower);

    let answers = duckdb_answers(&dataset);
    let documented: Vec<&str> = answers.keys().map(String::as_str).collect();
    assert_eq!(
        documented,
        [
            "growth_by_site",
            "growth_by_type",
            "leak_records",
            "top_retained_types"
        ],
        "every documented dataset query needs its check here"
    );

    // Growth between the two dumps of the growing process; the other
    // process has one dump, so no rows.
    let by_site = diff_rows(&first, &second, grower, false);
    assert!(!by_site.is_empty());
    assert_eq!(answers["growth_by_site"], by_site);
    assert_eq!(
        answers["growth_by_type"],
        diff_rows(&first, &second, grower, true)
    );

    // Retained by type, summed over each process's latest dump.
    let mut retained: BTreeMap<String, (u64, u64, u64)> = BTreeMap::new();
    for dump in [&second, &leaks_dump] {
        let top = heapdump_json(&[
            OsStr::new("top"),
            os(dump),
            OsStr::new("--retained"),
            OsStr::new("-n"),
            OsStr::new("100000"),
        ]);
        for row in top["types"].as_array().unwrap() {
            let entry = retained
                .entry(row["type"].as_str().unwrap().to_owned())
                .or_default();
            entry.0 += 1;
            entry.1 += row["objects"].as_u64().unwrap();
            entry.2 += row["retained"].as_u64().unwrap();
        }
    }
    let mut expected: Vec<Vec<Value>> = retained
        .into_iter()
        .map(|(ty, (dumps, objects, bytes))| {
            vec![ty.into(), dumps.into(), objects.into(), bytes.into()]
        })
        .collect();
    expected.sort_by(|a, b| {
        (b[3].as_u64().cmp(&a[3].as_u64())).then(a[0].as_str().cmp(&b[0].as_str()))
    });
    expected.truncate(10);
    assert_eq!(answers["top_retained_types"], expected);

    // Loss records of each process's latest dump, every class but still
    // reachable, compared as sets (ties in size have no set order).
    let mut records: Vec<Vec<Value>> = Vec::new();
    for (dump, pid) in [(&second, grower), (&leaks_dump, leaker)] {
        let leaks = heapdump_json(&[
            OsStr::new("leaks"),
            os(dump),
            OsStr::new("--show"),
            OsStr::new("definite,indirect,possible"),
            OsStr::new("-n"),
            OsStr::new("100000"),
        ]);
        for record in leaks["records"].as_array().unwrap() {
            records.push(vec![
                pid.into(),
                record["class"].clone(),
                site_label(&record["site"]).into(),
                record["stack"].clone(),
                record["blocks"].clone(),
                record["direct_bytes"].clone(),
                record["indirect_bytes"].clone(),
            ]);
        }
    }
    assert!(
        records
            .iter()
            .any(|r| r[1] == "definitely_lost" && r[6] != 0),
        "the leaks example holds a lost list: {records:?}"
    );
    let sorted = |mut rows: Vec<Vec<Value>>| {
        rows.sort_by_key(|row| row.iter().map(Value::to_string).collect::<Vec<_>>());
        rows
    };
    assert_eq!(sorted(answers["leak_records"].clone()), sorted(records));
}

#[test]
fn a_dump_exported_twice_is_refused_unless_forced() {
    let dir = scratch_dir("export_parquet_twice");
    let dump = dir.join("leaks.hdump");
    run_ok(Command::new(binary("leaks")).arg(&dump));
    let dataset = dir.join("dataset");
    let export = |force: bool| {
        let mut command = Command::new(binary("heapdump"));
        command.arg("toparquet").arg(&dump).arg("-o").arg(&dataset);
        if force {
            command.arg("--force");
        }
        command.output().unwrap()
    };
    assert!(export(false).status.success());
    let partitions = |table: &str| -> Vec<String> {
        std::fs::read_dir(dataset.join(table))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    };
    let objects = partitions("objects");
    assert_eq!(objects.len(), 1);
    assert!(objects[0].starts_with("dump=p"), "{objects:?}");

    let again = export(false);
    assert_eq!(again.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(
        stderr.contains("exists already") && stderr.contains("--force"),
        "{stderr}"
    );

    assert!(export(true).status.success());
    assert_eq!(partitions("objects"), objects);
    // No staging directory is left behind.
    let hidden: Vec<_> = std::fs::read_dir(&dataset)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with('.')
        })
        .collect();
    assert!(hidden.is_empty());
}
