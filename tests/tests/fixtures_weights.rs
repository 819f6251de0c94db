//! Tests against ../shared/fixtures (NOT RUN when ../shared is absent): the same TransformerNet weights
//! as zip `.pth`, legacy `.pth` and safetensors must load to identical tensors.
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use models::{Error, Weights};
use styleforge_tests::{check, try_outcome, Case, Outcome};

fn main() -> ExitCode {
    styleforge_tests::run(
        "fixtures_weights",
        &[
            Case {
                name: "three_formats_agree",
                run: three_formats_agree,
            },
            Case {
                name: "legacy_extra_keys_are_running_stats",
                run: legacy_extra_keys_are_running_stats,
            },
            Case {
                name: "truncated_copies_name_the_file",
                run: truncated_copies_name_the_file,
            },
        ],
    )
}

fn load_all() -> Result<[Weights; 3], Outcome> {
    let mut out = Vec::new();
    for rel in [
        "fixtures/tnet_a.pth",
        "fixtures/tnet_a_legacy.pth",
        "fixtures/tnet_a.safetensors",
    ] {
        let p = styleforge_tests::shared_file(rel)?;
        out.push(Weights::load(&p).map_err(|e| Outcome::Fail(format!("loading {rel}: {e}")))?);
    }
    let [a, b, c]: [Weights; 3] = out
        .try_into()
        .map_err(|_| Outcome::Fail("three files".into()))?;
    Ok([a, b, c])
}

fn three_formats_agree() -> Outcome {
    let [zip, legacy, st] = try_outcome!(load_all());
    if zip.tensors.keys().ne(st.tensors.keys()) {
        return Outcome::Fail("zip .pth and safetensors have different keys".into());
    }
    if st.metadata.get("arch").map(String::as_str) != Some("transformer_net") {
        return Outcome::Fail(format!("safetensors metadata: {:?}", st.metadata));
    }
    let mut values = 0usize;
    for (key, t) in &st.tensors {
        for (what, other) in [("zip .pth", &zip), ("legacy .pth", &legacy)] {
            let Some(o) = other.tensors.get(key) else {
                return Outcome::Fail(format!("{what} lacks `{key}`"));
            };
            if o.shape != t.shape {
                return Outcome::Fail(format!(
                    "{what} `{key}`: shape {:?} vs {:?}",
                    o.shape, t.shape
                ));
            }
            if o.data
                .iter()
                .zip(&t.data)
                .any(|(a, b)| a.to_bits() != b.to_bits())
            {
                return Outcome::Fail(format!("{what} `{key}`: values differ from safetensors"));
            }
        }
        if t.data.iter().all(|&v| v == 0.0) {
            return Outcome::Fail(format!("`{key}` is all zeros"));
        }
        values += t.data.len();
    }
    if st.tensors.len() != 62 {
        return Outcome::Fail(format!("{} tensors, expected 62", st.tensors.len()));
    }
    Outcome::Pass(format!(
        "{} tensors, {values} values identical in all three files",
        st.tensors.len()
    ))
}

fn legacy_extra_keys_are_running_stats() -> Outcome {
    let [zip, legacy, _] = try_outcome!(load_all());
    let extra: Vec<&String> = legacy
        .tensors
        .keys()
        .filter(|k| !zip.tensors.contains_key(*k))
        .collect();
    let missing: Vec<&String> = zip
        .tensors
        .keys()
        .filter(|k| !legacy.tensors.contains_key(*k))
        .collect();
    if !missing.is_empty() {
        return Outcome::Fail(format!("legacy lacks {missing:?}"));
    }
    if extra.len() != 30 {
        return Outcome::Fail(format!(
            "{} extra keys in the legacy file, expected 30: {extra:?}",
            extra.len()
        ));
    }
    for k in &extra {
        let Some(norm) = k
            .strip_suffix(".running_mean")
            .or_else(|| k.strip_suffix(".running_var"))
        else {
            return Outcome::Fail(format!("extra key `{k}` is not a running stat"));
        };
        // The running stats belong to an instance norm whose affine weight is in the state dict.
        let last = norm.rsplit('.').next().unwrap_or(norm);
        if !last.starts_with("in") || !zip.tensors.contains_key(&format!("{norm}.weight")) {
            return Outcome::Fail(format!("extra key `{k}` is not an `inN` running stat"));
        }
    }
    Outcome::Pass(format!("{} running_mean/var entries", extra.len()))
}

fn truncated_copies_name_the_file() -> Outcome {
    let dir = std::env::temp_dir().join(format!(
        "styleforge-fixtures-weights-{}",
        std::process::id()
    ));
    check!(std::fs::create_dir_all(&dir), "temp dir");
    let result = truncated_in(&dir);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn truncated_in(dir: &Path) -> Outcome {
    let mut cases = 0;
    for rel in [
        "fixtures/tnet_a.pth",
        "fixtures/tnet_a_legacy.pth",
        "fixtures/tnet_a.safetensors",
    ] {
        let src = try_outcome!(styleforge_tests::shared_file(rel));
        let bytes = check!(std::fs::read(&src), rel);
        let name = src
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        // Cut in the header/pickle, in the middle of the data and just before the end.
        for cut in [bytes.len() / 1000, bytes.len() / 2, bytes.len() - 3] {
            let p: PathBuf = dir.join(format!("cut{cut}-{name}"));
            check!(
                std::fs::write(&p, &bytes[..cut]),
                "writing the truncated copy"
            );
            match Weights::load(&p) {
                Ok(_) => {
                    return Outcome::Fail(format!("{name} cut to {cut} bytes loaded without error"))
                }
                Err(e @ Error::Format { .. }) => {
                    let msg = e.to_string();
                    if !msg.contains(&p.display().to_string()) {
                        return Outcome::Fail(format!("error does not name the file: {msg}"));
                    }
                }
                Err(other) => {
                    return Outcome::Fail(format!(
                        "{name} cut to {cut}: expected a Format error, got {other}"
                    ))
                }
            }
            cases += 1;
        }
    }
    Outcome::Pass(format!("{cases} truncated copies refused"))
}
