//! `heapdump run` on unmodified programs: a C program compiled here
//! without frame pointers (tests/programs/known_heap.c), and programs
//! Debian ships (sqlite3, python3). The dump is sound, its blocks are the
//! program's, its functions are named, the leak classes agree with
//! memcheck's, the exit status and signals pass through, and what
//! `LD_PRELOAD` cannot reach is refused.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

use heapdump_tests::{
    binary, compile_program, heapdump_json, heapdump_run, line_of, run_ok, scratch_dir, the_dump,
    workspace_root,
};

/// Compiles the known-heap C program into `dir` with `flags`.
fn compile(dir: &Path, name: &str, flags: &[&str]) -> PathBuf {
    compile_program(dir, "known_heap.c", "gcc", name, flags)
}

#[test]
fn a_c_program_without_frame_pointers_is_tracked_whole_and_its_exit_status_passes() {
    let dir = scratch_dir("run_c_program");
    let program = compile(&dir, "known_heap", &["-O1", "-fomit-frame-pointer"]);
    let dumps = dir.join("dumps");
    let output = heapdump_run(
        &dumps,
        &[OsStr::new("--"), program.as_os_str(), OsStr::new("7")],
    );
    assert_eq!(output.status.code(), Some(7), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("heapdump: 1 dump(s) in"), "{stderr}");

    let (path, dump) = the_dump(&dumps);
    let view = dump.view();
    let count = |size: u64| view.allocations().iter().filter(|a| a.size == size).count();
    assert_eq!(count(1000), 99);
    assert_eq!(count(5000), 1);
    assert_eq!(count(64), 50);
    assert_eq!(count(200), 10);

    // Sites are the program's functions, named from its symbol table.
    let top = heapdump_json(&[OsStr::new("top"), path.as_os_str(), program.as_os_str()]);
    let site_of = |bytes: u64| -> String {
        top["rows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|row| row["bytes"] == bytes)
            .map(|row| row["function"].as_str().unwrap_or("").to_string())
            .unwrap_or_default()
    };
    assert_eq!(site_of(99_000), "make_kept");
    assert_eq!(site_of(3_200), "make_list");
    assert_eq!(site_of(2_000), "leak");

    // Leak classes: the 10 blocks whose pointers were lost, as memcheck says.
    let leaks = heapdump_json(&[OsStr::new("leaks"), path.as_os_str()]);
    let class = |name: &str| -> (u64, u64) {
        let row = leaks["summary"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["class"] == name)
            .unwrap();
        (
            row["blocks"].as_u64().unwrap(),
            row["bytes"].as_u64().unwrap(),
        )
    };
    assert_eq!(class("definitely_lost"), (10, 2000));
    assert_eq!(class("indirectly_lost"), (0, 0));
    assert_eq!(class("possibly_lost"), (0, 0));
    assert_eq!(class("still_reachable"), (150, 107_200));
    let memcheck = Command::new("valgrind")
        .args(["--leak-check=full", "--show-leak-kinds=all"])
        .arg(&program)
        .output()
        .expect("valgrind is needed for this test (Debian package valgrind)");
    let report = String::from_utf8_lossy(&memcheck.stderr);
    assert!(
        report.contains("definitely lost: 2,000 bytes in 10 blocks"),
        "{report}"
    );
    assert!(
        report.contains("indirectly lost: 0 bytes in 0 blocks"),
        "{report}"
    );
}

/// The functions of the example stack of `top --json`'s row for `function`.
fn stack_functions(top: &serde_json::Value, function: &str) -> Vec<String> {
    let row = top["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|row| row["function"] == function)
        .unwrap_or_else(|| panic!("no row for {function}: {top}"));
    row["stack_example"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|frame| frame["function"].as_str().map(str::to_string))
        .collect()
}

#[test]
fn stacks_are_whole_with_and_without_frame_pointers() {
    let dir = scratch_dir("run_c_stacks");
    for (name, flags) in [
        ("without_fp", ["-O2", "-fomit-frame-pointer"]),
        ("with_fp", ["-O2", "-fno-omit-frame-pointer"]),
    ] {
        let program = compile(&dir, name, &flags);
        let dumps = dir.join(format!("dumps_{name}"));
        let output = heapdump_run(&dumps, &[OsStr::new("--"), program.as_os_str()]);
        assert!(output.status.success(), "{output:?}");
        let (path, dump) = the_dump(&dumps);
        let top = heapdump_json(&[OsStr::new("top"), path.as_os_str(), program.as_os_str()]);
        // Each site's stack goes on through `main` and the C library's
        // start to `_start`, in order: the program's frames keep no frame
        // pointer in the first build, and the C library's in neither.
        for site in ["make_kept", "make_list", "leak"] {
            let functions = stack_functions(&top, site);
            let from_site: Vec<&str> = functions
                .iter()
                .map(String::as_str)
                .skip_while(|f| *f != site)
                .collect();
            assert_eq!(
                from_site.first(),
                Some(&site),
                "{name}: {site}: {functions:?}"
            );
            assert_eq!(from_site[1], "main", "{name}: {site}: {functions:?}");
            assert_eq!(
                from_site.last(),
                Some(&"_start"),
                "{name}: {site}: {functions:?}"
            );
            // `__libc_start_main` as the C library exports it, or
            // `__libc_start_main_impl` as its debug package names it.
            assert!(
                from_site.iter().any(|f| f.starts_with("__libc_start_main")),
                "{name}: {site}: {functions:?}"
            );
        }
        // The dump says which stacks needed CFI: all of the program's,
        // since the C library's start keeps no frame pointer.
        let view = dump.view();
        let cfi = heapdump_formats::records::stack_flags::CFI;
        let stacks = view.stacks();
        let used: Vec<u32> = view.allocations().iter().map(|a| a.stack).collect();
        assert!(!used.is_empty());
        for stack in used {
            let flags = stacks.get(stack as usize).unwrap().flags;
            assert_ne!(flags & cfi, 0, "{name}: stack {stack}");
        }
    }
}

#[test]
fn a_cxx_programs_sites_are_its_demangled_functions_and_its_blocks_are_typed_by_libstdcxx() {
    let dir = scratch_dir("run_cxx_program");
    let program = compile_program(
        &dir,
        "leak_shapes.cpp",
        "g++",
        "leak_shapes",
        &["-g", "-O1", "-fomit-frame-pointer"],
    );
    let dumps = dir.join("dumps");
    let output = heapdump_run(&dumps, &[OsStr::new("--"), program.as_os_str()]);
    assert!(output.status.success(), "{output:?}");
    let (path, _) = the_dump(&dumps);

    // Sites: the program's functions, demangled, past libstdc++'s
    // operator new and std::string code and the std::vector, std::map and
    // std::make_shared code inlined into them, at the line of the
    // statement that allocated. Neither the program nor libstdc++ has
    // frame pointers: the stacks are unwound by their CFI.
    let source = workspace_root().join("tests/programs/leak_shapes.cpp");
    let top = heapdump_json(&[OsStr::new("top"), path.as_os_str(), program.as_os_str()]);
    let rows = |top: &serde_json::Value| -> Vec<(u64, u64, String)> {
        let mut rows: Vec<(u64, u64, String)> = top["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|row| {
                let name = match row["type"].as_str() {
                    Some(ty) => ty.to_owned(),
                    None => format!(
                        "{}:{}",
                        row["function"].as_str().unwrap_or("?"),
                        row["line"].as_u64().unwrap_or(0)
                    ),
                };
                (
                    row["bytes"].as_u64().unwrap(),
                    row["count"].as_u64().unwrap(),
                    name,
                )
            })
            .collect();
        rows.sort();
        rows
    };
    let at = |function: &str, marker: &str| format!("{function}:{}", line_of(&source, marker));
    let mut expected = vec![
        (80, 1, at("lose_holder()", "new Holder()")),
        (101, 1, at("keep_registry()", "std::string(100, 'r')")),
        (112, 1, at("keep_registry()", "std::make_shared<Widget>()")),
        (120, 1, at("keep_registry()", "registry = new Registry()")),
        (144, 3, at("keep_registry()", "registry->scores[i]")),
        (400, 1, at("lose_holder()", "values.reserve(50)")),
        (1120, 20, at("lose_list()", "head = new Node")),
        (1500, 1, at("keep_middle()", "new char[1500]")),
        (4096, 1, at("keep_registry()", "registry->ids.push_back(i)")),
    ];
    // libstdc++'s emergency exception pool, from its start-up code: sited
    // past libstdc++'s frames at the loader's `call_init`, which the C
    // library's debug package (libc6-dbg) names.
    let pool = rows(&top)
        .into_iter()
        .find(|(_, _, name)| name.starts_with("call_init:"))
        .expect("libstdc++'s own block, allocated when the loader initialized it");
    assert_eq!(pool.1, 1);
    expected.push(pool.clone());
    expected.sort();
    assert_eq!(rows(&top), expected);

    // Types: from the allocators' and containers' template arguments; a
    // new-expression names none, so its block is named after its site.
    let by_type = heapdump_json(&[
        OsStr::new("top"),
        path.as_os_str(),
        program.as_os_str(),
        OsStr::new("--by"),
        OsStr::new("type"),
    ]);
    let site = |function: &str, marker: &str| format!("alloc@{}", at(function, marker));
    let mut expected = vec![
        (80, 1, site("lose_holder()", "new Holder()")),
        (101, 1, "std::string buffer".to_owned()),
        (112, 1, "std::shared_ptr<Widget> block".to_owned()),
        (120, 1, site("keep_registry()", "registry = new Registry()")),
        (
            144,
            3,
            "std::_Rb_tree_node<std::pair<int const, double>>".to_owned(),
        ),
        (400, 1, "std::vector<long> buffer".to_owned()),
        (1120, 20, site("lose_list()", "head = new Node")),
        (1500, 1, site("keep_middle()", "new char[1500]")),
        (4096, 1, "std::vector<int> buffer".to_owned()),
        (
            pool.0,
            1,
            format!("alloc@{}", pool.2.trim_end_matches(":0")),
        ),
    ];
    expected.sort();
    assert_eq!(rows(&by_type), expected);

    // The exports name them alike: SQLite's types, with each block's class.
    let db = dir.join("heap.db");
    run_ok(
        std::process::Command::new(binary("heapdump"))
            .arg("tosqlite")
            .arg(&path)
            .arg(&program)
            .arg("-o")
            .arg(&db),
    );
    let typed = run_ok(std::process::Command::new("sqlite3").arg(&db).arg(
        "SELECT t.name, o.leak_class, count(*), sum(o.size) FROM objects o \
         JOIN types t ON t.id = o.type_id WHERE t.recovered = 1 \
         GROUP BY t.name, o.leak_class ORDER BY t.name",
    ));
    assert_eq!(
        String::from_utf8_lossy(&typed.stdout),
        "std::_Rb_tree_node<std::pair<int const, double>>|still_reachable|3|144\n\
         std::shared_ptr<Widget> block|still_reachable|1|112\n\
         std::string buffer|still_reachable|1|101\n\
         std::vector<int> buffer|still_reachable|1|4096\n\
         std::vector<long> buffer|indirectly_lost|1|400\n"
    );
}

/// `heapdump ARGS...`'s stdout (JSON) and stderr; fails the test if it fails.
fn heapdump_json_and_stderr(args: &[&OsStr]) -> (serde_json::Value, String) {
    let output = run_ok(Command::new(binary("heapdump")).args(args).arg("--json"));
    let json = serde_json::from_slice(&output.stdout).expect("heapdump printed no JSON");
    (json, String::from_utf8_lossy(&output.stderr).into_owned())
}

/// `(function, file name, line)` of each frame of `top --json`'s example
/// stack for the row of `function`.
fn stack_locations(top: &serde_json::Value, function: &str) -> Vec<(String, String, u64)> {
    let row = top["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|row| row["function"] == function)
        .unwrap_or_else(|| panic!("no row for {function}: {top}"));
    row["stack_example"]
        .as_array()
        .unwrap()
        .iter()
        .map(|frame| {
            let file = frame["file"].as_str().unwrap_or("");
            (
                frame["function"].as_str().unwrap_or("").to_string(),
                file.rsplit('/').next().unwrap_or("").to_string(),
                frame["line"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

/// A stripped program, as distributions ship them, is named from its
/// separate debug file: found through the `.gnu_debuglink` next to it, and
/// by build-id under `--debug-dir`; the C library from its debug package
/// (libc6-dbg) under /usr/lib/debug. Without the file, the warning says
/// what a C program needs.
#[test]
fn a_stripped_program_is_named_from_its_separate_debug_file() {
    let dir = scratch_dir("run_separate_debug");
    let program = compile(&dir, "known_heap", &["-O1", "-g", "-Wl,--build-id"]);
    let debug_file = dir.join("known_heap.debug");
    run_ok(
        Command::new("objcopy")
            .arg("--only-keep-debug")
            .arg(&program)
            .arg(&debug_file),
    );
    run_ok(Command::new("strip").arg("--strip-all").arg(&program));
    run_ok(
        Command::new("objcopy")
            .arg(format!("--add-gnu-debuglink={}", debug_file.display()))
            .arg(&program),
    );
    let dumps = dir.join("dumps");
    let output = heapdump_run(&dumps, &[OsStr::new("--"), program.as_os_str()]);
    assert!(output.status.success(), "{output:?}");
    let (path, dump) = the_dump(&dumps);
    let source = workspace_root().join("tests/programs/known_heap.c");
    let expected = |function: &str, marker: &str| {
        (
            function.to_string(),
            "known_heap.c".to_string(),
            u64::from(line_of(&source, marker)),
        )
    };

    // The debug file next to the program, through its debuglink.
    let (top, stderr) = heapdump_json_and_stderr(&[OsStr::new("top"), path.as_os_str()]);
    assert!(!stderr.contains("no symbol table"), "{stderr}");
    let stack = stack_locations(&top, "make_kept");
    assert_eq!(stack[0], expected("make_kept", "kept[i] = malloc(1000)"));
    assert_eq!(stack[1], expected("main", "make_kept(); make_list()"));
    // Between main and __libc_start_main, the C library's own
    // __libc_start_call_main, which only its debug package names (it is
    // not an exported symbol), with its source file.
    let start = stack
        .iter()
        .position(|(function, _, _)| function == "__libc_start_call_main")
        .unwrap_or_else(|| panic!("libc6-dbg is needed for this test: {stack:?}"));
    assert_eq!(stack[start].1, "libc_start_call_main.h", "{stack:?}");
    assert!(stack[start].2 > 0, "{stack:?}");
    assert_eq!(stack[start - 1].0, "main", "{stack:?}");

    // Moved to a build-id directory: found with --debug-dir only.
    let view = dump.view();
    let build_id = view
        .modules()
        .iter()
        .find(|m| m.flags & heapdump_formats::records::module_flags::MAIN_EXECUTABLE != 0)
        .map(|m| view.string(m.build_id).unwrap().to_vec())
        .unwrap();
    assert!(build_id.len() >= 2);
    let hex: String = build_id.iter().map(|b| format!("{b:02x}")).collect();
    let by_id = dir.join("debug").join(".build-id").join(&hex[..2]);
    std::fs::create_dir_all(&by_id).unwrap();
    std::fs::rename(&debug_file, by_id.join(format!("{}.debug", &hex[2..]))).unwrap();
    let (top, stderr) = heapdump_json_and_stderr(&[OsStr::new("top"), path.as_os_str()]);
    assert!(
        stderr.contains("has no symbol table") && stderr.contains("build it with -g"),
        "{stderr}"
    );
    assert!(!stderr.contains("Cargo.toml"), "{stderr}");
    let rows = top["rows"].as_array().unwrap();
    assert!(
        rows.iter().all(|row| row["function"] != "make_kept"),
        "{top}"
    );
    let debug_dir = dir.join("debug");
    let (top, stderr) = heapdump_json_and_stderr(&[
        OsStr::new("top"),
        path.as_os_str(),
        OsStr::new("--debug-dir"),
        debug_dir.as_os_str(),
    ]);
    assert!(!stderr.contains("no symbol table"), "{stderr}");
    let stack = stack_locations(&top, "make_kept");
    assert_eq!(stack[0], expected("make_kept", "kept[i] = malloc(1000)"));
}

/// The sites of `top --json`'s rows, by bytes.
fn sites_by_bytes(top: &serde_json::Value) -> Vec<(u64, String)> {
    top["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            (
                row["bytes"].as_u64().unwrap(),
                row["function"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

/// Exit handlers run after the C library destroyed the main thread's
/// thread-locals, and allocate (OpenSSL's cleanup, in every program linked
/// with it): the tracker walks their stacks as any other and the program
/// ends normally (it used to abort inside `malloc`).
#[test]
fn allocations_in_exit_handlers_are_tracked() {
    let dir = scratch_dir("run_exit_allocations");
    let program = compile_program(
        &dir,
        "exit_allocations.c",
        "gcc",
        "exit_allocations",
        &["-O1", "-g"],
    );
    let dumps = dir.join("dumps");
    let output = heapdump_run(&dumps, &[OsStr::new("--"), program.as_os_str()]);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let (path, _) = the_dump(&dumps);
    let top = heapdump_json(&[OsStr::new("top"), path.as_os_str()]);
    assert_eq!(
        sites_by_bytes(&top),
        [(777, "main".to_string()), (555, "cleanup".to_string())]
    );
}

/// A block whose only pointer is in the program's own anonymous memory (an
/// mmap'd arena, as Python's objects and V8's heap are) is reachable, as
/// memcheck says; one whose pointer was in memory since unmapped is lost.
#[test]
fn pointers_in_the_programs_anonymous_memory_hold_blocks_as_memcheck_says() {
    let dir = scratch_dir("run_anonymous_arena");
    let program = compile_program(
        &dir,
        "anonymous_arena.c",
        "gcc",
        "anonymous_arena",
        &["-O1", "-g"],
    );
    let dumps = dir.join("dumps");
    let output = heapdump_run(&dumps, &[OsStr::new("--"), program.as_os_str()]);
    assert!(output.status.success(), "{output:?}");
    let (path, dump) = the_dump(&dumps);
    let leaks = heapdump_json(&[OsStr::new("leaks"), path.as_os_str()]);
    let class = |name: &str| -> (u64, u64) {
        let row = leaks["summary"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["class"] == name)
            .unwrap();
        (
            row["blocks"].as_u64().unwrap(),
            row["bytes"].as_u64().unwrap(),
        )
    };
    assert_eq!(class("definitely_lost"), (1, 1234), "{leaks}");
    assert_eq!(
        class("still_reachable"),
        (9, 4321 + 8 * 3000 + 28),
        "{leaks}"
    );
    // The arena is a root of its own kind.
    let anonymous = heapdump_formats::records::root_kind::ANONYMOUS_MAPPING;
    assert!(
        dump.view()
            .roots()
            .iter()
            .any(|root| root.kind == anonymous)
    );
    let memcheck = Command::new("valgrind")
        .args(["--leak-check=full"])
        .arg(&program)
        .output()
        .expect("valgrind is needed for this test (Debian package valgrind)");
    let report = String::from_utf8_lossy(&memcheck.stderr);
    assert!(
        report.contains("definitely lost: 1,234 bytes in 1 blocks"),
        "{report}"
    );
    assert!(
        report.contains("still reachable: 28,349 bytes in 9 blocks"),
        "{report}"
    );
}

/// Memory the program marked `MADV_DONTFORK` (V8's heap) is not in a
/// fork-mode dump's child: the dump says so and `leaks` warns; a stop-mode
/// dump scans it, and its block is reachable.
#[test]
fn memory_the_program_keeps_from_forks_is_said_missing_or_scanned_in_stop_mode() {
    let dir = scratch_dir("run_dontfork_arena");
    let program = compile_program(
        &dir,
        "dontfork_arena.c",
        "gcc",
        "dontfork_arena",
        &["-O1", "-g"],
    );
    let not_forked = heapdump_formats::records::process_flags::MEMORY_NOT_FORKED;
    for mode in ["fork", "stop"] {
        let dumps = dir.join(mode);
        let output = heapdump_run(
            &dumps,
            &[
                OsStr::new("--mode"),
                OsStr::new(mode),
                OsStr::new("--"),
                program.as_os_str(),
            ],
        );
        assert!(output.status.success(), "{output:?}");
        let (path, dump) = the_dump(&dumps);
        let flags = dump.view().process().flags;
        let (leaks, stderr) = heapdump_json_and_stderr(&[OsStr::new("leaks"), path.as_os_str()]);
        let lost = &leaks["summary"][0];
        assert_eq!(lost["class"], "definitely_lost");
        if mode == "fork" {
            assert_ne!(flags & not_forked, 0, "{mode}");
            assert!(stderr.contains("MADV_DONTFORK"), "{stderr}");
            assert_eq!(lost["bytes"], 2222, "{leaks}");
        } else {
            assert_eq!(flags & not_forked, 0, "{mode}");
            assert!(!stderr.contains("MADV_DONTFORK"), "{stderr}");
            assert_eq!(lost["bytes"], 0, "{leaks}");
        }
    }
}

/// A fixed-address executable whose code takes `malloc`'s address (as
/// Debian's node does) holds the symbol's canonical PLT entry, which the
/// preload library's check for another allocator finds first: it is a
/// stub that leads to our `malloc`, so the program is tracked.
#[test]
fn a_non_pie_program_that_takes_mallocs_address_is_tracked() {
    let dir = scratch_dir("run_malloc_address");
    let program = compile_program(
        &dir,
        "malloc_address.c",
        "gcc",
        "malloc_address",
        &["-O1", "-fno-pie", "-no-pie"],
    );
    let dumps = dir.join("dumps");
    let output = heapdump_run(&dumps, &[OsStr::new("--"), program.as_os_str()]);
    assert!(output.status.success(), "{output:?}");
    let (_, dump) = the_dump(&dumps);
    let mut sizes: Vec<u64> = dump.view().allocations().iter().map(|a| a.size).collect();
    sizes.sort_unstable();
    assert_eq!(sizes, (1000..1010).collect::<Vec<u64>>());
}

#[test]
fn statically_linked_and_setuid_programs_are_refused() {
    let dir = scratch_dir("run_refusals");
    let program = compile(&dir, "static_heap", &["-O1", "-static"]);
    let output = heapdump_run(&dir, &[OsStr::new("--"), program.as_os_str()]);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("is statically linked: LD_PRELOAD cannot reach"),
        "{stderr}"
    );

    let setuid = compile(&dir, "setuid_heap", &["-O1"]);
    std::fs::set_permissions(
        &setuid,
        std::os::unix::fs::PermissionsExt::from_mode(0o4755),
    )
    .unwrap();
    let output = heapdump_run(&dir, &[OsStr::new("--"), setuid.as_os_str()]);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stderr).contains("set-user-ID"));

    let output = heapdump_run(
        &dir,
        &[OsStr::new("--"), OsStr::new("no-such-program-here")],
    );
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stderr).contains("no-such-program-here: not found"));
}

#[test]
fn sqlite3_running_a_script_is_dumped_on_growth() {
    let dir = scratch_dir("run_sqlite3");
    // The script holds 50,000 rows of ~100 bytes in memory: one dump once
    // live bytes grew by 256 KiB, a tenth of the way (the trigger thread
    // dumps when it is next scheduled: on a loaded machine a program that
    // ended soon after would be dumped as it freed everything).
    let script = "create table t(a, b); \
                  insert into t select value, printf('%0100d', value) from generate_series(1, 50000); \
                  select count(*) from t;";
    let output = heapdump_run(
        &dir,
        &[
            OsStr::new("--on"),
            OsStr::new("growth:256KiB"),
            OsStr::new("--max"),
            OsStr::new("1"),
            OsStr::new("--"),
            OsStr::new("sqlite3"),
            OsStr::new(":memory:"),
            OsStr::new(script),
        ],
    );
    assert!(output.status.success(), "{output:?}");
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "50000");
    let (path, dump) = the_dump(&dir);
    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        name.contains(".growth."),
        "not the growth trigger's dump: {name}"
    );
    let view = dump.view();
    // The trigger fired at that level; by the time the dump stopped the
    // program (late, on a loaded machine) it may have freed some.
    assert!(view.process().peak_live_bytes >= 256 << 10);
    assert!(view.allocations().len() > 50);
    // Every block the scan reached is sqlite's: its page cache holds the
    // rest, and nothing it holds looks lost.
    let leaks = heapdump_json(&[OsStr::new("leaks"), path.as_os_str()]);
    let lost = leaks["summary"][0]["bytes"].as_u64().unwrap();
    assert!(lost * 100 < view.process().live_bytes, "{leaks}");
}

#[test]
fn python3_with_malloc_is_dumped_mid_run_with_its_objects() {
    let dir = scratch_dir("run_python3");
    let script = "import os, signal, time\n\
                  data = [{'k': i, 'v': str(i) * 10} for i in range(20000)]\n\
                  os.kill(os.getpid(), signal.SIGUSR2)\n\
                  time.sleep(3)\n\
                  print(len(data))\n";
    let output = Command::new(binary("heapdump"))
        .arg("run")
        .arg("--dir")
        .arg(&dir)
        .args(["--on", "signal:USR2", "--", "python3", "-c", script])
        .env("PYTHONMALLOC", "malloc")
        .output()
        .expect("cannot run heapdump run");
    assert!(output.status.success(), "{output:?}");
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "20000");
    let (_, dump) = the_dump(&dir);
    let view = dump.view();
    // 20000 dicts and 20000 strings at least, each its own malloc.
    assert!(
        view.allocations().len() > 40_000,
        "{}",
        view.allocations().len()
    );
    assert!(view.edges().len() > 40_000);
}

#[test]
fn threads_named_by_std_are_not_lost() {
    // The demo's worker threads are alive at its dump; their names are
    // held by memory std allocates with `System` (malloc), which the
    // tracker now sees. The one definitely lost block is the leak the demo
    // plants on purpose (tests/demo.rs checks it whole).
    let dir = scratch_dir("run_thread_names");
    let dump = dir.join("demo.hdump");
    let status = Command::new(binary("demo"))
        .arg(&dump)
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let leaks = heapdump_json(&[OsStr::new("leaks"), dump.as_os_str()]);
    assert_eq!(leaks["summary"][0]["class"], "definitely_lost");
    assert_eq!(leaks["summary"][0]["blocks"], 1, "{leaks}");
    assert_eq!(
        leaks["records"][0]["site"]["function"], "demo::open_room",
        "{leaks}"
    );
}

#[test]
fn a_forked_child_still_dies_of_a_trigger_signal_it_inherited() {
    let dir = scratch_dir("run_fork_term");
    let program = compile_program(&dir, "fork_term.c", "gcc", "fork_term", &["-O1"]);
    for children in [false, true] {
        let mut args = vec![OsStr::new("--on"), OsStr::new("signal:TERM")];
        if children {
            args.push(OsStr::new("--children"));
        }
        args.extend([OsStr::new("--"), program.as_os_str()]);
        let output = heapdump_run(&dir, &args);
        assert_eq!(
            output.status.code(),
            Some(0),
            "children={children}: {output:?}"
        );
    }
}

/// `malloc_usable_size` never answers fewer bytes than were asked for, in
/// production mode (whose small blocks glibc may give exactly the bytes
/// asked, no footer's room) and with every stack: from a signal handler
/// that interrupts the tracker, and in a child made by `fork` (untracked,
/// since `heapdump run` watches the program's own process) for the blocks
/// it inherited and those it makes.
#[test]
fn malloc_usable_size_is_never_short_in_a_signal_handler_or_an_untracked_child() {
    let dir = scratch_dir("run_usable_size");
    let program = compile_program(&dir, "usable_size.c", "gcc", "usable_size", &["-O1", "-g"]);
    for stacks in ["sample:512KiB", "all"] {
        let dumps = dir.join(format!("dumps-{}", stacks.replace(':', "-")));
        let output = heapdump_run(
            &dumps,
            &[
                OsStr::new("--stacks"),
                OsStr::new(stacks),
                OsStr::new("--"),
                program.as_os_str(),
            ],
        );
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{stacks}: {output:?}");
        assert!(
            stdout.contains("child: 0 inherited and 0 new blocks short")
                && stdout.contains("parent: 0 blocks short; 0 of 1000 signals"),
            "{stacks}: {stdout}"
        );
    }
}

/// A dump appears under its name only once it is whole: watched every
/// millisecond while `heapdump run` writes the exit dump of a heap of 1.5
/// million blocks (about a second of writing), the file is never seen
/// shorter than it ends, it opens and verifies, and nothing is left under
/// the name it was written at. In both snapshot modes.
#[test]
fn a_dump_file_appears_only_when_it_is_whole() {
    let dir = scratch_dir("run_whole_dump");
    let program = compile_program(&dir, "big_heap_at_exit.c", "gcc", "big_heap", &["-O1"]);
    for mode in ["fork", "stop"] {
        let dumps = dir.join(format!("dumps-{mode}"));
        let mut run = std::process::Command::new(heapdump_tests::binary("heapdump"))
            .args(["run", "--mode", mode, "--dir"])
            .arg(&dumps)
            .arg("--")
            .arg(&program)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // The size each file had when first seen.
        let mut first_seen = std::collections::BTreeMap::new();
        let status = loop {
            for entry in std::fs::read_dir(&dumps).into_iter().flatten().flatten() {
                let path = entry.path();
                if path.extension() == Some(OsStr::new("hdump"))
                    && let Ok(metadata) = entry.metadata()
                {
                    first_seen.entry(path).or_insert(metadata.len());
                }
            }
            if let Some(status) = run.try_wait().unwrap() {
                break status;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        };
        assert!(status.success(), "{mode}: {:?}", run.wait_with_output());
        let (path, _) = the_dump(&dumps);
        let whole = std::fs::metadata(&path).unwrap().len();
        assert_eq!(
            first_seen.get(&path).copied().unwrap_or(whole),
            whole,
            "{mode}: {} was seen before it was whole",
            path.display()
        );
        let left: Vec<_> = files_in(&dumps)
            .into_iter()
            .filter(|p| *p != path)
            .collect();
        assert!(left.is_empty(), "{mode}: left behind: {left:?}");
    }
}

/// On a file system with neither `RENAME_NOREPLACE` nor hard links (many
/// FUSE file systems; the program fakes one with a seccomp filter), the
/// dump still gets its name, whole, in both snapshot modes, and nothing is
/// left under the name it was written at.
#[test]
fn a_dump_gets_its_name_where_there_are_no_hard_links() {
    let dir = scratch_dir("run_no_hard_links");
    let program = compile_program(&dir, "no_hard_links.c", "gcc", "no_hard_links", &["-O1"]);
    for mode in ["fork", "stop"] {
        let dumps = dir.join(format!("dumps-{mode}"));
        let output = heapdump_run(
            &dumps,
            &[
                OsStr::new("--mode"),
                OsStr::new(mode),
                OsStr::new("--"),
                program.as_os_str(),
            ],
        );
        assert!(output.status.success(), "{mode}: {output:?}");
        let (path, dump) = the_dump(&dumps);
        let view = dump.view();
        let held = view.allocations().iter().filter(|a| a.size == 777).count();
        assert_eq!(held, 64, "{mode}");
        let all = files_in(&dumps);
        assert_eq!(all, [path], "{mode}");
    }
}

/// A `mode=fork` dump whose snapshot process fails after the program has
/// ended (here: the program's file size limit stops the dump partway,
/// after the program has `_exit`ed) leaves nothing behind: the snapshot
/// process removes what it wrote, as it would have named it if whole.
#[test]
fn a_snapshot_process_that_fails_after_the_program_ended_leaves_nothing() {
    let (dumps, output) = run_until_the_dump_is_cut_off("run_snapshot_outlives_program", "fork");
    assert!(output.status.success(), "{output:?}");
    let left = files_in(&dumps);
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// Runs tests/programs/snapshot_outlives_program.c under `heapdump run`
/// with `--on signal:USR2` in snapshot `mode`: the program's file size
/// limit cuts its dump off after the program has ended. `--children`: the
/// program is the first process's child (that one waits for the snapshot
/// process once the program is gone). The dumps' directory and the run.
fn run_until_the_dump_is_cut_off(test: &str, mode: &str) -> (PathBuf, std::process::Output) {
    let dir = scratch_dir(test);
    let program = compile_program(
        &dir,
        "snapshot_outlives_program.c",
        "gcc",
        "snapshot_outlives_program",
        &["-O1"],
    );
    let dumps = dir.join("dumps");
    let output = heapdump_run(
        &dumps,
        &[
            OsStr::new("--children"),
            OsStr::new("--on"),
            OsStr::new("signal:USR2"),
            OsStr::new("--mode"),
            OsStr::new(mode),
            OsStr::new("--"),
            program.as_os_str(),
            dumps.as_os_str(),
        ],
    );
    (dumps, output)
}

/// The paths of the files in `dir`, in the order the directory lists them.
fn files_in(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect()
}

/// A `mode=stop` dump cut off by the program's end stays under its
/// `.partial` name, and `heapdump run` lists it as not whole rather than
/// saying no dump was written.
#[test]
fn heapdump_run_lists_a_dump_the_programs_end_cut_off() {
    let (dumps, output) = run_until_the_dump_is_cut_off("run_dump_cut_off", "stop");
    assert!(output.status.success(), "{output:?}");
    let left = files_in(&dumps);
    assert_eq!(left.len(), 1, "{left:?}");
    let partial = &left[0];
    assert!(partial.to_str().unwrap().ends_with(".signal.hdump.partial"));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let listed: Vec<&str> = stderr
        .lines()
        .skip_while(|line| !line.contains("1 dump(s) not whole when the program ended"))
        .skip(1)
        .map(str::trim)
        .collect();
    assert_eq!(listed, [partial.to_str().unwrap()], "{stderr}");
}

/// A dump whose file fails to close (NFS reports data that never reached
/// the server there; the program fakes it with a seccomp filter) is never
/// named, in either snapshot mode: the program, watching the directory
/// with inotify, never sees a `.hdump` file, the failure is reported and
/// nothing is left.
#[test]
fn a_dump_whose_file_fails_to_close_is_never_named() {
    let dir = scratch_dir("run_close_fails");
    let program = compile_program(&dir, "close_fails.c", "gcc", "close_fails", &["-O1"]);
    for mode in ["fork", "stop"] {
        let dumps = dir.join(format!("dumps-{mode}"));
        let output = heapdump_run(
            &dumps,
            &[
                OsStr::new("--on"),
                OsStr::new("signal:USR2"),
                OsStr::new("--mode"),
                OsStr::new(mode),
                OsStr::new("--"),
                program.as_os_str(),
                dumps.as_os_str(),
            ],
        );
        assert!(output.status.success(), "{mode}: {output:?}");
        assert_eq!(
            String::from_utf8_lossy(&output.stdout),
            "never named\n",
            "{mode}: {output:?}"
        );
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("cannot write: "), "{mode}: {stderr}");
        let left = files_in(&dumps);
        assert!(left.is_empty(), "{mode}: left behind: {left:?}");
    }
}

/// `fork` with `pthread_atfork` handlers that allocate, free and reallocate:
/// those registered before the tracker's (by a library the program links,
/// initialized before the preload library) run while the forking thread
/// holds every tracker lock, and must neither wait for them forever (the
/// program's alarm would end it), nor keep a block they free allocated
/// (glibc must hand the same chunk out again, else the program exits 4:
/// untracked scratch blocks whose last bytes read as a footer were kept
/// at every fork), nor leave a record of freed memory: the two blocks with
/// records their prepare handler freed and reallocated are freed, and not
/// in the dump; nor may `malloc_usable_size` say a block made there has
/// fewer bytes than were asked (exit 5). In exact and production mode.
#[test]
fn fork_handlers_registered_before_the_trackers_allocate_and_free_without_deadlock() {
    let dir = scratch_dir("run_atfork");
    compile_program(
        &dir,
        "atfork_early.c",
        "gcc",
        "libatfork_early.so",
        &["-O1", "-shared", "-fPIC"],
    );
    let search = format!("-L{}", dir.display());
    let rpath = format!("-Wl,-rpath,{}", dir.display());
    let program = compile_program(
        &dir,
        "atfork_handlers.c",
        "gcc",
        "atfork_handlers",
        &[
            "-O1",
            "-g",
            "-pthread",
            &search,
            &rpath,
            "-Wl,--no-as-needed",
            "-latfork_early",
        ],
    );
    for stacks in ["all", "sample:512KiB"] {
        let dumps = dir.join(format!("dumps-{}", stacks.replace(':', "-")));
        let list = dir.join(format!("blocks-{}.txt", stacks.replace(':', "-")));
        let output = heapdump_run(
            &dumps,
            &[
                OsStr::new("--stacks"),
                OsStr::new(stacks),
                OsStr::new("--"),
                program.as_os_str(),
                list.as_os_str(),
            ],
        );
        assert!(output.status.success(), "{stacks}: {output:?}");
        let (_, dump) = the_dump(&dumps);
        let dumped = dumped_blocks(&dump.view());
        for (address, size) in held_blocks(&list) {
            assert_ne!(
                dumped.get(&address).map(|&(size, _)| size),
                Some(size),
                "{stacks}: the block of {size} bytes freed in the fork handler at {address:#x}"
            );
        }
    }
}

/// Production mode around an unmodified C program: every block the program
/// holds is in the dump at its exact size (malloc, calloc, realloc that
/// grows, shrinks, moves and fails, posix_memalign, aligned_alloc,
/// pvalloc; blocks freed and moved by another thread), those under 1 KiB
/// and out of the stack sample listed from the presence map without
/// records, the bigger ones (some of which glibc serves with mmap) with
/// records; in both dump modes.
/// The dump's blocks: address to size and flags.
fn dumped_blocks(
    view: &heapdump_formats::read::DumpView<'_>,
) -> std::collections::HashMap<u64, (u64, u32)> {
    view.allocations()
        .iter()
        .map(|a| (a.address, (a.size, a.flags)))
        .collect()
}

/// The blocks a test program says it holds: lines of "ADDRESS SIZE",
/// the address in hex.
fn held_blocks(list: &Path) -> Vec<(u64, u64)> {
    std::fs::read_to_string(list)
        .unwrap()
        .lines()
        .map(|line| {
            let (address, size) = line.split_once(' ').unwrap();
            (
                u64::from_str_radix(address, 16).unwrap(),
                size.parse().unwrap(),
            )
        })
        .collect()
}

#[test]
fn production_mode_without_memory_for_its_map_records_or_drops_blocks_and_never_lies_about_their_room()
 {
    use heapdump_formats::records::allocation_flags::UNRECORDED;
    let dir = scratch_dir("run_map_refused");
    let program = compile_program(
        &dir,
        "map_refused.c",
        "gcc",
        "map_refused",
        &["-O1", "-g", "-pthread"],
    );
    let dumps = dir.join("dumps");
    let list = dir.join("blocks.txt");
    // A sampling interval far above what the program allocates: a block in
    // the stack sample would get a record (and the footer's room) whatever
    // the map says, and the counts below would move by chance.
    let output = heapdump_run(
        &dumps,
        &[
            OsStr::new("--stacks"),
            OsStr::new("sample:1GiB"),
            OsStr::new("--"),
            program.as_os_str(),
            list.as_os_str(),
        ],
    );
    // 3: `malloc_usable_size` promised bytes a block asked without the
    // footer's room does not have.
    assert!(output.status.success(), "{output:?}");
    let (_, dump) = the_dump(&dumps);
    let view = dump.view();
    let dumped = dumped_blocks(&view);
    // The 2,000 blocks of 24 bytes had no room for a footer when the map
    // was refused: not recorded, and counted as dropped. Those of 20 bytes
    // got records (all freed since).
    assert_eq!(
        view.process().dropped_allocations,
        2_000,
        "the map's memory was not refused, or blocks were dropped otherwise"
    );
    let (mut listed, mut untracked) = (0, 0);
    for (address, size) in held_blocks(&list) {
        match dumped.get(&address) {
            Some(&(dumped_size, flags)) => {
                assert_eq!(dumped_size, size, "block {address:#x}");
                assert_eq!(
                    flags & UNRECORDED,
                    0,
                    "block {address:#x}: not from the map"
                );
                listed += 1;
            }
            None => {
                assert_eq!(size, 24, "block {address:#x} of {size} bytes is missing");
                untracked += 1;
            }
        }
    }
    // The arena's first block and the 1,000 blocks reallocated to 40 bytes
    // (a dropped block gets a record when it moves); the other 1,000 of 24
    // bytes stay untracked.
    assert_eq!((listed, untracked), (1_001, 1_000));
}

#[test]
fn production_mode_lists_every_block_of_a_c_program_at_its_exact_size() {
    use heapdump_formats::records::allocation_flags::{SAMPLED, UNRECORDED};
    let dir = scratch_dir("run_production_heap");
    let program = compile_program(
        &dir,
        "production_heap.c",
        "gcc",
        "production_heap",
        &["-O1", "-g", "-pthread"],
    );
    for mode in ["fork", "stop"] {
        let dumps = dir.join(format!("dumps-{mode}"));
        let list = dir.join(format!("blocks-{mode}.txt"));
        let output = heapdump_run(
            &dumps,
            &[
                OsStr::new("--stacks"),
                OsStr::new("sample:512KiB"),
                OsStr::new("--mode"),
                OsStr::new(mode),
                OsStr::new("--"),
                program.as_os_str(),
                list.as_os_str(),
            ],
        );
        assert!(output.status.success(), "{output:?}");
        let (path, dump) = the_dump(&dumps);
        let view = dump.view();
        let dumped = dumped_blocks(&view);
        let (mut small, mut unrecorded, mut large) = (0, 0, 0);
        for (address, size) in held_blocks(&list) {
            let Some(&(dumped_size, flags)) = dumped.get(&address) else {
                panic!("{mode}: block {address:#x} of {size} bytes is not in the dump");
            };
            assert_eq!(dumped_size, size, "{mode}: block {address:#x}");
            if size >= 1 << 10 {
                large += 1;
                assert_eq!(flags & UNRECORDED, 0, "{mode}: {address:#x} has a record");
            } else {
                small += 1;
                unrecorded += u64::from(flags & UNRECORDED != 0);
                if flags & UNRECORDED != 0 {
                    assert_eq!(flags & SAMPLED, 0);
                }
            }
        }
        assert_eq!(
            (small, large),
            (12_386, 3_042),
            "{mode}: the program's blocks"
        );
        // The failed 16 TiB reallocations counted nothing.
        let peak = view.process().peak_live_bytes;
        assert!(peak < 1 << 30, "{mode}: peak {peak}");
        // The sample (S = 512 KiB) takes about one small block in 500.
        assert!(
            unrecorded >= small * 98 / 100,
            "{mode}: {unrecorded} of {small} small blocks listed from the map"
        );
        // Every block of the program's array stays reachable (glibc's own
        // blocks, such as the ended thread's, may not be).
        let leaks = heapdump_json(&[OsStr::new("leaks"), path.as_os_str()]);
        let reachable = leaks["summary"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["class"] == "still_reachable")
            .map_or(0, |c| c["blocks"].as_u64().unwrap());
        assert!(reachable >= 15_428, "{mode}: {leaks}");
    }
}
