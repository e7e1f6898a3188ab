//! The services a server answers, told apart by the path of a call
//! (`/package.Service/Method`). The layers in front of every call treat health checks and
//! reflection apart: they are answered whatever the load, during a drain, and (health always,
//! reflection by default) without a token.

/// The service a call's path names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `neuron_explainer.activations.v1.ActivationService`.
    Activations,
    /// `grpc.health.v1.Health`.
    Health,
    /// `grpc.reflection.v1.ServerReflection` or its `v1alpha` twin.
    Reflection,
    /// Any other path: no service of this server.
    Unknown,
}

impl Route {
    /// The service of `path`, by its service name (the method is not checked).
    ///
    /// Every call's layers ask this a few times: the path is compared with each service's
    /// `/name/` prefix in place, which costs a fifth of cutting it at its slashes first.
    pub fn of(path: &str) -> Route {
        let names = |service: &str| {
            path.strip_prefix('/')
                .and_then(|rest| rest.strip_prefix(service))
                .is_some_and(|rest| rest.starts_with('/'))
        };
        if names(activations_proto::SERVICE_NAME) {
            Route::Activations
        } else if names(tonic_health::pb::health_server::SERVICE_NAME) {
            Route::Health
        } else if names(tonic_reflection::pb::v1::server_reflection_server::SERVICE_NAME)
            || names(tonic_reflection::pb::v1alpha::server_reflection_server::SERVICE_NAME)
        {
            Route::Reflection
        } else {
            Route::Unknown
        }
    }

    /// The service and method of `path` as metrics and logs label a call: one of this server's
    /// own (the contract's methods, health's `Check` and `Watch`, reflection's
    /// `ServerReflectionInfo`), else `("", "unknown")`, so that no caller, with or without
    /// credentials, can add a label value.
    pub fn labels(path: &str) -> (&'static str, &'static str) {
        const UNKNOWN: (&str, &str) = ("", "unknown");
        let Some((service, method)) = path.strip_prefix('/').and_then(|rest| rest.split_once('/'))
        else {
            return UNKNOWN;
        };
        let known = |service: &'static str, methods: &[&'static str]| {
            methods
                .iter()
                .find(|known| **known == method)
                .map(|known| (service, *known))
        };
        let found = match Route::of(path) {
            Route::Activations => {
                known(activations_proto::SERVICE_NAME, &activations_proto::METHODS)
            }
            Route::Health => known(
                tonic_health::pb::health_server::SERVICE_NAME,
                &["Check", "Watch"],
            ),
            Route::Reflection => [
                tonic_reflection::pb::v1::server_reflection_server::SERVICE_NAME,
                tonic_reflection::pb::v1alpha::server_reflection_server::SERVICE_NAME,
            ]
            .into_iter()
            .find(|name| *name == service)
            .and_then(|name| known(name, &["ServerReflectionInfo"])),
            Route::Unknown => None,
        };
        found.unwrap_or(UNKNOWN)
    }

    /// Health checks and reflection: outside the limits on calls and answered while draining,
    /// so a busy or stopping server still says how it is and what it serves.
    pub fn is_infrastructure(self) -> bool {
        matches!(self, Route::Health | Route::Reflection)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_their_service() {
        assert_eq!(Route::of("/grpc.health.v1.Health/Check"), Route::Health);
        assert_eq!(Route::of("/grpc.health.v1.Health/Watch"), Route::Health);
        assert_eq!(
            Route::of("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"),
            Route::Reflection
        );
        assert_eq!(
            Route::of("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"),
            Route::Reflection
        );
        assert_eq!(
            Route::of("/neuron_explainer.activations.v1.ActivationService/GetNeuronRecord"),
            Route::Activations
        );
        for other in [
            "/made.up.Service/AnyMethod123",
            "/grpc.health.v1.HealthX/Check",
            "/grpc.health.v1.Health",
            "grpc.health.v1.Health/Check",
            "",
            "/",
        ] {
            assert_eq!(Route::of(other), Route::Unknown, "{other}");
        }
        assert!(Route::Health.is_infrastructure() && Route::Reflection.is_infrastructure());
    }

    #[test]
    fn labels_come_from_a_fixed_set() {
        let service = activations_proto::SERVICE_NAME;
        for method in activations_proto::METHODS {
            assert_eq!(
                Route::labels(&format!("/{service}/{method}")),
                (service, method)
            );
        }
        assert_eq!(
            Route::labels("/grpc.health.v1.Health/Check"),
            ("grpc.health.v1.Health", "Check")
        );
        assert_eq!(
            Route::labels("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"),
            (
                "grpc.reflection.v1alpha.ServerReflection",
                "ServerReflectionInfo"
            )
        );
        for other in [
            "/made.up.Service/AnyMethod123",
            &format!("/{service}/GetNeuronRecords"),
            "/grpc.health.v1.Health/Ping",
            "/grpc.reflection.v1.ServerReflection/Other",
            "",
            "/",
        ] {
            assert_eq!(Route::labels(other), ("", "unknown"), "{other}");
        }
        assert!(!Route::Activations.is_infrastructure() && !Route::Unknown.is_infrastructure());
    }

    /// The service a path names, by cutting it at its slashes: the rule [`Route::of`] keeps.
    fn cut_at_slashes(path: &str) -> Route {
        match path
            .strip_prefix('/')
            .and_then(|rest| rest.split_once('/'))
            .map_or("", |(service, _method)| service)
        {
            activations_proto::SERVICE_NAME => Route::Activations,
            tonic_health::pb::health_server::SERVICE_NAME => Route::Health,
            tonic_reflection::pb::v1::server_reflection_server::SERVICE_NAME
            | tonic_reflection::pb::v1alpha::server_reflection_server::SERVICE_NAME => {
                Route::Reflection
            }
            _ => Route::Unknown,
        }
    }

    proptest::proptest! {
        #[test]
        fn a_path_names_the_service_between_its_first_two_slashes(
            lead in proptest::sample::select(vec!["", "/", "//", "x/"]),
            service in proptest::sample::select(vec![
                activations_proto::SERVICE_NAME,
                "grpc.health.v1.Health",
                "grpc.health.v1",
                "grpc.reflection.v1.ServerReflection",
                "grpc.reflection.v1alpha.ServerReflection",
                "grpc.reflection.v1alpha.ServerReflectionX",
                "",
            ]),
            tail in "[a-zA-Z/.]{0,12}",
        ) {
            let path = format!("{lead}{service}{tail}");
            proptest::prop_assert_eq!(Route::of(&path), cut_at_slashes(&path), "{}", path);
        }
    }
}
