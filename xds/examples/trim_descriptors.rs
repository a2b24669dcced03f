//! Writes `xds/src/envoy.desc`: the protobuf descriptors rampart-xds reads Envoy's
//! bootstrap files and checks resources with, cut down from the full set the
//! `envoy-types` crate ships (`src/generated/types.bin` in its source) to the files that
//! the bootstrap, the four xDS resource types and the extensions rampart understands
//! need, without comments.
//!
//! ```text
//! cargo run -p rampart-xds --example trim_descriptors -- \
//!     ~/.cargo/registry/src/*/envoy-types-0.7.*/src/generated/types.bin xds/src/envoy.desc
//! ```
//!
//! With a third argument, an existing cut (`xds/src/envoy.desc`), its files are kept as
//! they are and only the files it lacks are added from TYPES_BIN: a new root comes in
//! without the others changing version.

use std::collections::{BTreeSet, HashMap};

use prost::Message;

const ROOTS: &[&str] = &[
    "envoy/config/bootstrap/v3/bootstrap.proto",
    "envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager.proto",
    "envoy/extensions/filters/http/router/v3/router.proto",
    "envoy/extensions/filters/network/tcp_proxy/v3/tcp_proxy.proto",
    "envoy/extensions/upstreams/http/v3/http_protocol_options.proto",
    "envoy/extensions/transport_sockets/tls/v3/tls.proto",
    "envoy/extensions/access_loggers/file/v3/file.proto",
    "envoy/extensions/access_loggers/stream/v3/stream.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let (input, output, base) = match args.as_slice() {
        [_, i, o] => (i, o, None),
        [_, i, o, b] => (i, o, Some(b)),
        _ => return Err("usage: trim_descriptors TYPES_BIN OUTPUT [BASE]".into()),
    };
    let bytes = std::fs::read(input)?;
    let mut set = prost_types::FileDescriptorSet::decode(&bytes[..])?;
    let base = match base {
        Some(b) => Some(prost_types::FileDescriptorSet::decode(
            &std::fs::read(b)?[..],
        )?),
        None => None,
    };
    if let Some(base) = &base {
        // The base's version of every file it has.
        set.file
            .retain(|f| !base.file.iter().any(|g| g.name() == f.name()));
        set.file.extend(base.file.iter().cloned());
    }
    let by_name: HashMap<String, Vec<String>> = set
        .file
        .iter()
        .map(|f| (f.name().to_owned(), f.dependency.clone()))
        .collect();
    let mut need = BTreeSet::new();
    let mut todo: Vec<String> = ROOTS.iter().map(|s| (*s).to_owned()).collect();
    while let Some(f) = todo.pop() {
        let deps = by_name
            .get(&f)
            .ok_or_else(|| format!("{f} is not in {input}"))?;
        if need.insert(f) {
            todo.extend(deps.iter().cloned());
        }
    }
    set.file.retain(|f| need.contains(f.name()));
    for f in &mut set.file {
        f.source_code_info = None;
    }
    std::fs::write(output, set.encode_to_vec())?;
    println!("{} files, {} bytes", set.file.len(), set.encoded_len());
    Ok(())
}
