//! Which fields of Envoy's messages rampart honours.
//!
//! Every field a resource (or the bootstrap file) sets is looked up here: fields rampart
//! reads are translated (and their values checked by the translator), fields listed as
//! ignored have no effect on what rampart does, and any other field is an error naming
//! its path, so that a configuration never silently means something else here than in
//! Envoy. docs/xds.md documents each entry; a test checks that it does.

use prost_reflect::{DynamicMessage, ReflectMessage, Value};

/// Fields of one message type: those read, and those ignored (no effect).
pub struct Fields {
    pub message: &'static str,
    pub read: &'static [&'static str],
    pub ignored: &'static [&'static str],
}

const fn f(
    message: &'static str,
    read: &'static [&'static str],
    ignored: &'static [&'static str],
) -> Fields {
    Fields {
        message,
        read,
        ignored,
    }
}

/// Messages whose every field is read as a value (durations, wrappers, structs).
const VALUES: &[&str] = &[
    "google.protobuf.Duration",
    "google.protobuf.UInt32Value",
    "google.protobuf.UInt64Value",
    "google.protobuf.Int64Value",
    "google.protobuf.BoolValue",
    "google.protobuf.DoubleValue",
    "google.protobuf.StringValue",
    "google.protobuf.Struct",
    "google.protobuf.Value",
    "google.protobuf.ListValue",
    "google.protobuf.Empty",
    "envoy.type.v3.Percent",
    "envoy.type.v3.Int64Range",
    "envoy.config.core.v3.Locality",
    "envoy.config.core.v3.AggregatedConfigSource",
    "envoy.extensions.transport_sockets.tls.v3.TlsParameters",
];

/// The table. Message names are written in full.
pub static FIELDS: &[Fields] = &[
    // Bootstrap.
    f(
        "envoy.config.bootstrap.v3.Bootstrap",
        &["node", "static_resources", "dynamic_resources", "admin"],
        &[
            "cluster_manager",
            "stats_sinks",
            "stats_flush_interval",
            "stats_config",
            "watchdog",
            "watchdogs",
            "layered_runtime",
            "overload_manager",
            "enable_dispatcher_stats",
            "flags_path",
            "header_prefix",
            "stats_server_version_override",
            "node_context_params",
            "default_regex_engine",
            "stats_flush_on_admin",
        ],
    ),
    f(
        "envoy.config.bootstrap.v3.Bootstrap.StaticResources",
        &["listeners", "clusters"],
        &[],
    ),
    f(
        "envoy.config.bootstrap.v3.Bootstrap.DynamicResources",
        &["lds_config", "cds_config", "ads_config"],
        &[],
    ),
    f(
        "envoy.config.bootstrap.v3.Admin",
        &["address"],
        &[
            "access_log_path",
            "access_log",
            "profile_path",
            "socket_options",
            "ignore_global_conn_limit",
            "allow_paths",
        ],
    ),
    f(
        "envoy.config.core.v3.Node",
        &["id", "cluster", "metadata", "locality"],
        &[
            "user_agent_name",
            "user_agent_version",
            "user_agent_build_version",
            "extensions",
            "client_features",
            "listening_addresses",
        ],
    ),
    f(
        "envoy.config.core.v3.ApiConfigSource",
        &[
            "api_type",
            "grpc_services",
            "set_node_on_first_message_only",
        ],
        &[
            "transport_api_version",
            "refresh_delay",
            "request_timeout",
            "rate_limit_settings",
        ],
    ),
    f(
        "envoy.config.core.v3.GrpcService",
        &["envoy_grpc", "initial_metadata", "retry_policy"],
        &["timeout"],
    ),
    f(
        "envoy.config.core.v3.GrpcService.EnvoyGrpc",
        &[
            "cluster_name",
            "authority",
            "retry_policy",
            "max_receive_message_length",
        ],
        &["skip_envoy_headers"],
    ),
    f(
        "envoy.config.core.v3.RetryPolicy",
        &["retry_back_off"],
        &["num_retries"],
    ),
    f(
        "envoy.config.core.v3.BackoffStrategy",
        &["base_interval", "max_interval"],
        &[],
    ),
    f(
        "envoy.config.core.v3.ConfigSource",
        &["ads", "initial_fetch_timeout"],
        &["resource_api_version"],
    ),
    f(
        "envoy.config.core.v3.HeaderValue",
        &["key", "value", "raw_value"],
        &[],
    ),
    // Listener.
    f(
        "envoy.config.listener.v3.Listener",
        &[
            "name",
            "address",
            "filter_chains",
            "default_filter_chain",
            "listener_filters",
            "freebind",
            "tcp_backlog_size",
            "bind_to_port",
        ],
        &[
            "stat_prefix",
            "metadata",
            "traffic_direction",
            "drain_type",
            "per_connection_buffer_limit_bytes",
            "listener_filters_timeout",
            "continue_on_listener_filters_timeout",
            "reuse_port",
            "enable_reuse_port",
            "tcp_keepalive",
            "connection_balance_config",
            "ignore_global_conn_limit",
            "max_connections_to_accept_per_socket_event",
            "bypass_overload_manager",
        ],
    ),
    f(
        "envoy.config.listener.v3.ListenerFilter",
        &["name"],
        &["typed_config"],
    ),
    f("envoy.config.core.v3.Address", &["socket_address"], &[]),
    f(
        "envoy.config.core.v3.SocketAddress",
        &["address", "port_value", "protocol", "ipv4_compat"],
        &[],
    ),
    f(
        "envoy.config.listener.v3.FilterChain",
        &["filters", "transport_socket"],
        &["name", "metadata", "transport_socket_connect_timeout"],
    ),
    f(
        "envoy.config.listener.v3.Filter",
        &["typed_config"],
        &["name"],
    ),
    f(
        "envoy.config.core.v3.TransportSocket",
        &["typed_config"],
        &["name"],
    ),
    // HTTP connection manager.
    f(
        "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        &[
            "codec_type",
            "rds",
            "route_config",
            "http_filters",
            "access_log",
            "use_remote_address",
            "skip_xff_append",
            "stream_idle_timeout",
            "request_headers_timeout",
            "common_http_protocol_options",
            "http2_protocol_options",
            "max_request_headers_kb",
            "strip_any_host_port",
            "strip_matching_host_port",
            "normalize_path",
            "merge_slashes",
            "via",
        ],
        &[
            "stat_prefix",
            "xff_num_trusted_hops",
            "generate_request_id",
            "server_name",
            "server_header_transformation",
            "drain_timeout",
            "delayed_close_timeout",
            "add_user_agent",
            "upgrade_configs",
            "preserve_external_request_id",
            "proxy_100_continue",
            "internal_address_config",
            "forward_client_cert_details",
            "set_current_client_cert_details",
            "always_set_request_id_in_response",
            "represent_ipv4_remote_address_as_ipv4_mapped_ipv6",
            "stream_error_on_invalid_http_message",
            "http_protocol_options",
            "path_with_escaped_slashes_action",
            "append_x_forwarded_port",
            "request_id_extension",
            "strip_trailing_host_dot",
        ],
    ),
    f(
        "envoy.extensions.filters.network.http_connection_manager.v3.Rds",
        &["config_source", "route_config_name"],
        &[],
    ),
    f(
        "envoy.extensions.filters.network.http_connection_manager.v3.HttpFilter",
        &["name", "typed_config", "is_optional", "disabled"],
        &[],
    ),
    f(
        "envoy.extensions.filters.http.router.v3.Router",
        &[],
        &[
            "dynamic_stats",
            "start_child_span",
            "suppress_envoy_headers",
            "strict_check_headers",
            "respect_expected_rq_timeout",
            "suppress_grpc_request_failure_code_stats",
        ],
    ),
    f(
        "envoy.config.accesslog.v3.AccessLog",
        &["typed_config"],
        &["name"],
    ),
    f(
        "envoy.extensions.access_loggers.file.v3.FileAccessLog",
        &["path"],
        &[],
    ),
    f(
        "envoy.extensions.access_loggers.stream.v3.StdoutAccessLog",
        &[],
        &[],
    ),
    f(
        "envoy.extensions.access_loggers.stream.v3.StderrAccessLog",
        &[],
        &[],
    ),
    f(
        "envoy.config.core.v3.HttpProtocolOptions",
        &["idle_timeout", "max_headers_count"],
        &["headers_with_underscores_action", "max_response_headers_kb"],
    ),
    f(
        "envoy.config.core.v3.Http2ProtocolOptions",
        &["max_concurrent_streams"],
        &[
            "hpack_table_size",
            "initial_stream_window_size",
            "initial_connection_window_size",
            "max_outbound_frames",
            "max_outbound_control_frames",
            "max_consecutive_inbound_frames_with_empty_payload",
            "max_inbound_priority_frames_per_stream",
            "max_inbound_window_update_frames_per_data_frame_sent",
            "stream_error_on_invalid_http_messaging",
            "override_stream_error_on_invalid_http_message",
            "connection_keepalive",
            "max_header_field_size_kb",
        ],
    ),
    f(
        "envoy.config.core.v3.Http1ProtocolOptions",
        &[],
        &[
            "allow_absolute_url",
            "accept_http_10",
            "default_host_for_http_10",
            "header_key_format",
            "enable_trailers",
            "allow_chunked_length",
            "override_stream_error_on_invalid_http_message",
            "use_balsa_parser",
        ],
    ),
    // TLS.
    f(
        "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
        &[
            "common_tls_context",
            "require_client_certificate",
            "disable_stateless_session_resumption",
            "disable_stateful_session_resumption",
        ],
        &[
            "require_sni",
            "session_timeout",
            "ocsp_staple_policy",
            "prefer_client_ciphers",
            "full_scan_certs_on_sni_mismatch",
        ],
    ),
    f(
        "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
        &["common_tls_context", "sni"],
        &[
            "allow_renegotiation",
            "max_session_keys",
            "enforce_rsa_key_usage",
        ],
    ),
    f(
        "envoy.extensions.transport_sockets.tls.v3.CommonTlsContext",
        &[
            "tls_params",
            "tls_certificates",
            "validation_context",
            "alpn_protocols",
        ],
        &[],
    ),
    f(
        "envoy.extensions.transport_sockets.tls.v3.TlsCertificate",
        &["certificate_chain", "private_key"],
        &[],
    ),
    f(
        "envoy.extensions.transport_sockets.tls.v3.CertificateValidationContext",
        &["trusted_ca", "system_root_certs"],
        &[],
    ),
    f(
        "envoy.extensions.transport_sockets.tls.v3.CertificateValidationContext.SystemRootCerts",
        &[],
        &[],
    ),
    f(
        "envoy.config.core.v3.DataSource",
        &[
            "filename",
            "inline_bytes",
            "inline_string",
            "environment_variable",
        ],
        &[],
    ),
    // Routes.
    f(
        "envoy.config.route.v3.RouteConfiguration",
        &[
            "name",
            "virtual_hosts",
            "request_headers_to_add",
            "request_headers_to_remove",
            "response_headers_to_add",
            "response_headers_to_remove",
            "validate_clusters",
            "most_specific_header_mutations_wins",
        ],
        &["max_direct_response_body_size_bytes", "metadata"],
    ),
    f(
        "envoy.config.route.v3.VirtualHost",
        &[
            "name",
            "domains",
            "routes",
            "require_tls",
            "request_headers_to_add",
            "request_headers_to_remove",
            "response_headers_to_add",
            "response_headers_to_remove",
            "retry_policy",
        ],
        &[
            "virtual_clusters",
            "include_request_attempt_count",
            "include_attempt_count_in_response",
            "per_request_buffer_limit_bytes",
            "request_body_buffer_limit",
            "metadata",
        ],
    ),
    f(
        "envoy.config.route.v3.Route",
        &[
            "match",
            "route",
            "redirect",
            "direct_response",
            "request_headers_to_add",
            "request_headers_to_remove",
            "response_headers_to_add",
            "response_headers_to_remove",
        ],
        &[
            "name",
            "metadata",
            "decorator",
            "tracing",
            "per_request_buffer_limit_bytes",
            "request_body_buffer_limit",
            "stat_prefix",
        ],
    ),
    f(
        "envoy.config.route.v3.RouteMatch",
        &[
            "prefix",
            "path",
            "safe_regex",
            "path_separated_prefix",
            "case_sensitive",
            "headers",
            "query_parameters",
            "grpc",
            "runtime_fraction",
        ],
        &[],
    ),
    f(
        "envoy.config.route.v3.RouteMatch.GrpcRouteMatchOptions",
        &[],
        &[],
    ),
    f(
        "envoy.config.core.v3.RuntimeFractionalPercent",
        &["default_value"],
        &["runtime_key"],
    ),
    f(
        "envoy.type.v3.FractionalPercent",
        &["numerator", "denominator"],
        &[],
    ),
    f(
        "envoy.config.route.v3.HeaderMatcher",
        &[
            "name",
            "exact_match",
            "prefix_match",
            "suffix_match",
            "contains_match",
            "safe_regex_match",
            "string_match",
            "present_match",
            "range_match",
            "invert_match",
            "treat_missing_header_as_empty",
        ],
        &[],
    ),
    f(
        "envoy.config.route.v3.QueryParameterMatcher",
        &["name", "string_match", "present_match"],
        &[],
    ),
    f(
        "envoy.type.matcher.v3.StringMatcher",
        &[
            "exact",
            "prefix",
            "suffix",
            "contains",
            "safe_regex",
            "ignore_case",
        ],
        &[],
    ),
    f(
        "envoy.type.matcher.v3.RegexMatcher",
        &["regex"],
        &["google_re2"],
    ),
    f(
        "envoy.type.matcher.v3.RegexMatchAndSubstitute",
        &["pattern", "substitution"],
        &[],
    ),
    f(
        "envoy.config.route.v3.RouteAction",
        &[
            "cluster",
            "weighted_clusters",
            "cluster_not_found_response_code",
            "prefix_rewrite",
            "regex_rewrite",
            "host_rewrite_literal",
            "timeout",
            "idle_timeout",
            "retry_policy",
            "hash_policy",
        ],
        &[
            "priority",
            "max_grpc_timeout",
            "grpc_timeout_offset",
            "upgrade_configs",
            "include_vh_rate_limits",
            "early_data_policy",
        ],
    ),
    f(
        "envoy.config.route.v3.WeightedCluster",
        &["clusters", "total_weight"],
        &["runtime_key_prefix"],
    ),
    f(
        "envoy.config.route.v3.WeightedCluster.ClusterWeight",
        &["name", "weight"],
        &[],
    ),
    f(
        "envoy.config.route.v3.RetryPolicy",
        &[
            "retry_on",
            "num_retries",
            "per_try_timeout",
            "retriable_status_codes",
            "retry_back_off",
            "retry_host_predicate",
        ],
        &["host_selection_retry_max_attempts"],
    ),
    f(
        "envoy.config.route.v3.RetryPolicy.RetryBackOff",
        &["base_interval", "max_interval"],
        &[],
    ),
    f(
        "envoy.config.route.v3.RetryPolicy.RetryHostPredicate",
        &["name"],
        &["typed_config"],
    ),
    f(
        "envoy.config.route.v3.RouteAction.HashPolicy",
        &[
            "header",
            "cookie",
            "connection_properties",
            "query_parameter",
            "terminal",
        ],
        &[],
    ),
    f(
        "envoy.config.route.v3.RouteAction.HashPolicy.Header",
        &["header_name"],
        &[],
    ),
    f(
        "envoy.config.route.v3.RouteAction.HashPolicy.Cookie",
        &["name"],
        &[],
    ),
    f(
        "envoy.config.route.v3.RouteAction.HashPolicy.ConnectionProperties",
        &["source_ip"],
        &[],
    ),
    f(
        "envoy.config.route.v3.RouteAction.HashPolicy.QueryParameter",
        &["name"],
        &[],
    ),
    f(
        "envoy.config.route.v3.RedirectAction",
        &[
            "host_redirect",
            "port_redirect",
            "path_redirect",
            "prefix_rewrite",
            "https_redirect",
            "scheme_redirect",
            "response_code",
            "strip_query",
        ],
        &[],
    ),
    f(
        "envoy.config.route.v3.DirectResponseAction",
        &["status", "body"],
        &[],
    ),
    f(
        "envoy.config.core.v3.HeaderValueOption",
        &["header", "append", "append_action", "keep_empty_value"],
        &[],
    ),
    // Clusters.
    f(
        "envoy.config.cluster.v3.Cluster",
        &[
            "name",
            "type",
            "eds_cluster_config",
            "load_assignment",
            "connect_timeout",
            "lb_policy",
            "load_balancing_policy",
            "health_checks",
            "circuit_breakers",
            "outlier_detection",
            "transport_socket",
            "typed_extension_protocol_options",
            "http2_protocol_options",
            "common_lb_config",
            "common_http_protocol_options",
            "protocol_selection",
        ],
        &[
            "alt_stat_name",
            "metadata",
            "per_connection_buffer_limit_bytes",
            "dns_lookup_family",
            "dns_refresh_rate",
            "dns_failure_refresh_rate",
            "respect_dns_ttl",
            "dns_jitter",
            "dns_resolvers",
            "use_tcp_for_dns_lookups",
            "upstream_connection_options",
            "cleanup_interval",
            "ring_hash_lb_config",
            "maglev_lb_config",
            "least_request_lb_config",
            "round_robin_lb_config",
            "close_connections_on_host_health_failure",
            "ignore_health_on_host_removal",
            "wait_for_warm_on_init",
            "track_timeout_budgets",
            "track_cluster_stats",
            "preconnect_policy",
            "lrs_server",
            "http_protocol_options",
        ],
    ),
    f(
        "envoy.config.cluster.v3.Cluster.EdsClusterConfig",
        &["eds_config", "service_name"],
        &[],
    ),
    f(
        "envoy.config.cluster.v3.LoadBalancingPolicy",
        &["policies"],
        &[],
    ),
    f(
        "envoy.config.cluster.v3.LoadBalancingPolicy.Policy",
        &["typed_extension_config"],
        &[],
    ),
    f(
        "envoy.config.core.v3.TypedExtensionConfig",
        &["typed_config"],
        &["name"],
    ),
    f(
        "envoy.config.cluster.v3.CircuitBreakers",
        &["thresholds"],
        &[],
    ),
    f(
        "envoy.config.cluster.v3.CircuitBreakers.Thresholds",
        &[
            "priority",
            "max_connections",
            "max_pending_requests",
            "max_requests",
            "max_retries",
        ],
        &["track_remaining", "max_connection_pools"],
    ),
    f(
        "envoy.config.cluster.v3.OutlierDetection",
        &[
            "consecutive_5xx",
            "interval",
            "base_ejection_time",
            "max_ejection_time",
            "max_ejection_percent",
            "enforcing_consecutive_5xx",
            "consecutive_gateway_failure",
            "enforcing_consecutive_gateway_failure",
            "failure_percentage_threshold",
            "enforcing_failure_percentage",
            "failure_percentage_minimum_hosts",
            "failure_percentage_request_volume",
            "enforcing_success_rate",
        ],
        &[
            "max_ejection_time_jitter",
            "successful_active_health_check_uneject_host",
            "always_eject_one_host",
        ],
    ),
    f(
        "envoy.config.core.v3.HealthCheck",
        &[
            "timeout",
            "interval",
            "unhealthy_threshold",
            "healthy_threshold",
            "http_health_check",
            "tcp_health_check",
            "grpc_health_check",
            "interval_jitter_percent",
            "unhealthy_interval",
            "alt_port",
        ],
        &[
            "interval_jitter",
            "initial_jitter",
            "no_traffic_interval",
            "no_traffic_healthy_interval",
            "unhealthy_edge_interval",
            "healthy_edge_interval",
            "reuse_connection",
            "event_log_path",
            "always_log_health_check_failures",
            "always_log_health_check_success",
        ],
    ),
    f(
        "envoy.config.core.v3.HealthCheck.HttpHealthCheck",
        &["host", "path", "method", "expected_statuses"],
        &["retriable_statuses", "response_buffer_size"],
    ),
    f("envoy.config.core.v3.HealthCheck.TcpHealthCheck", &[], &[]),
    f(
        "envoy.config.core.v3.HealthCheck.GrpcHealthCheck",
        &["service_name"],
        &["authority"],
    ),
    f(
        "envoy.config.cluster.v3.Cluster.CommonLbConfig",
        &["healthy_panic_threshold"],
        &[
            "zone_aware_lb_config",
            "update_merge_window",
            "ignore_new_hosts_until_first_hc",
            "close_connections_on_host_set_change",
            "consistent_hashing_lb_config",
        ],
    ),
    f(
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
        &[
            "explicit_http_config",
            "common_http_protocol_options",
            "upstream_http_protocol_options",
        ],
        &["header_validation_config"],
    ),
    f(
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions.ExplicitHttpConfig",
        &["http_protocol_options", "http2_protocol_options"],
        &[],
    ),
    f("envoy.config.core.v3.UpstreamHttpProtocolOptions", &[], &[]),
    // Endpoints.
    f(
        "envoy.config.endpoint.v3.ClusterLoadAssignment",
        &["cluster_name", "endpoints", "policy"],
        &[],
    ),
    f(
        "envoy.config.endpoint.v3.ClusterLoadAssignment.Policy",
        &[],
        &[
            "overprovisioning_factor",
            "endpoint_stale_after",
            "weighted_priority_health",
        ],
    ),
    f(
        "envoy.config.endpoint.v3.LocalityLbEndpoints",
        &["lb_endpoints", "priority"],
        &["locality", "load_balancing_weight", "proximity", "metadata"],
    ),
    f(
        "envoy.config.endpoint.v3.LbEndpoint",
        &["endpoint", "health_status", "load_balancing_weight"],
        &["metadata"],
    ),
    f(
        "envoy.config.endpoint.v3.Endpoint",
        &["address", "health_check_config"],
        &["hostname", "additional_addresses", "observability_name"],
    ),
    f(
        "envoy.config.endpoint.v3.Endpoint.HealthCheckConfig",
        &["port_value", "address", "disable_active_health_check"],
        &["hostname"],
    ),
];

fn fields_of(message: &str) -> Option<&'static Fields> {
    FIELDS.iter().find(|f| f.message == message)
}

/// Why a field of a resource cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsupported {
    /// The field's path from the resource, like `filter_chains[0].filters[0].typed_config.tracing`.
    pub path: String,
    pub message: String,
}

impl std::fmt::Display for Unsupported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Every field of `msg` (and of the messages it holds) that rampart neither reads nor
/// may ignore.
pub fn unsupported(msg: &DynamicMessage) -> Vec<Unsupported> {
    let mut out = Vec::new();
    walk(msg, "", &mut out);
    out
}

fn join(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_owned()
    } else {
        format!("{path}.{name}")
    }
}

fn walk(msg: &DynamicMessage, path: &str, out: &mut Vec<Unsupported>) {
    let desc = msg.descriptor();
    let name = desc.full_name();
    if VALUES.contains(&name) {
        return;
    }
    if name == "google.protobuf.Any" {
        any(msg, path, out);
        return;
    }
    for u in msg.unknown_fields() {
        out.push(Unsupported {
            path: join(path, &format!("#{}", u.number())),
            message: format!(
                "field number {} is unknown to rampart's copy of {name}",
                u.number()
            ),
        });
    }
    let table = fields_of(name);
    for (field, value) in msg.fields() {
        let fname = field.name();
        let fpath = join(path, fname);
        match table {
            Some(t) if t.ignored.contains(&fname) => continue,
            Some(t) if t.read.contains(&fname) => {}
            _ => {
                out.push(Unsupported {
                    path: fpath,
                    message: format!("{} is not supported by rampart", short(name, fname)),
                });
                continue;
            }
        }
        match value {
            Value::Message(m) => walk(m, &fpath, out),
            Value::List(items) => {
                for (i, v) in items.iter().enumerate() {
                    if let Value::Message(m) = v {
                        walk(m, &format!("{fpath}[{i}]"), out);
                    }
                }
            }
            Value::Map(entries) => {
                for (k, v) in entries {
                    if let Value::Message(m) = v {
                        let key = match k {
                            prost_reflect::MapKey::String(s) => s.clone(),
                            other => format!("{other:?}"),
                        };
                        walk(m, &format!("{fpath}[{key}]"), out);
                    }
                }
            }
            _ => {}
        }
    }
}

/// An `Any`: its content is checked when it is a message rampart knows; the translator
/// decides about the others (an unknown required extension is an error there).
fn any(msg: &DynamicMessage, path: &str, out: &mut Vec<Unsupported>) {
    let url = msg
        .get_field_by_name("type_url")
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    let bytes = msg
        .get_field_by_name("value")
        .and_then(|v| v.as_bytes().cloned())
        .unwrap_or_default();
    let Some(full) = url.strip_prefix(crate::proto::TYPE_PREFIX) else {
        return;
    };
    if fields_of(full).is_none() {
        return;
    }
    match crate::proto::dynamic(full, &bytes) {
        Ok(inner) => walk(&inner, path, out),
        Err(e) => out.push(Unsupported {
            path: path.to_owned(),
            message: e,
        }),
    }
}

/// `Listener.freebind`: the message's name without its package, and the field.
fn short(message: &str, field: &str) -> String {
    format!("{}.{field}", doc_name(message))
}

/// A message's name as docs/xds.md writes it: without its package (`Cluster`,
/// `Cluster.EdsClusterConfig`), with one where two would read the same.
pub fn doc_name(message: &str) -> String {
    match message {
        "envoy.config.core.v3.HttpProtocolOptions" => return "core.HttpProtocolOptions".into(),
        "envoy.config.core.v3.RetryPolicy" => return "core.RetryPolicy".into(),
        _ => {}
    }
    let start = message
        .split('.')
        .position(|s| s.starts_with(|c: char| c.is_ascii_uppercase()))
        .unwrap_or(0);
    message.split('.').skip(start).collect::<Vec<_>>().join(".")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto;

    #[test]
    fn table_names_real_messages_and_fields() {
        for t in FIELDS {
            let d = proto::descriptor(t.message)
                .unwrap_or_else(|| panic!("{} is not an Envoy message", t.message));
            for f in t.read.iter().chain(t.ignored) {
                assert!(
                    d.get_field_by_name(f).is_some(),
                    "{} has no field {f}",
                    t.message
                );
            }
        }
        for v in VALUES {
            assert!(proto::descriptor(v).is_some(), "{v}");
        }
    }

    #[test]
    fn every_field_is_documented() {
        let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/xds.md"))
            .unwrap();
        let mut missing = Vec::new();
        for t in FIELDS {
            for f in t.read.iter().chain(t.ignored) {
                let key = format!("| `{}.{f}` |", doc_name(t.message));
                if !doc.contains(&key) {
                    missing.push(key);
                }
            }
        }
        assert!(
            missing.is_empty(),
            "fields missing from docs/xds.md:\n{}",
            missing.join("\n")
        );
    }

    #[test]
    fn unsupported_names_the_path_of_each_unknown_field() {
        use envoy_types::pb::envoy::config::listener::v3::{Filter, FilterChain, Listener};
        let l = Listener {
            name: "l".into(),
            stat_prefix: "ignored".into(),
            transparent: Some(envoy_types::pb::google::protobuf::BoolValue { value: true }),
            filter_chains: vec![FilterChain {
                filter_chain_match: Some(Default::default()),
                filters: vec![Filter {
                    name: "x".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        };
        let d = proto::dynamic(
            "envoy.config.listener.v3.Listener",
            &prost::Message::encode_to_vec(&l),
        )
        .unwrap();
        let found: Vec<String> = unsupported(&d).iter().map(ToString::to_string).collect();
        assert_eq!(
            found,
            [
                "filter_chains[0].filter_chain_match: FilterChain.filter_chain_match is not supported by rampart",
                "transparent: Listener.transparent is not supported by rampart",
            ]
        );
    }
}
