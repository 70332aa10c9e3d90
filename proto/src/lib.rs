//! The gRPC contracts of userctl, generated from `proto/userctl/**.proto`.
//!
//! - [`user::v1`]: `UserStore`, the private interface shared by the entry store and the cache.
//! - [`gateway::v1`]: `Gateway`, the only public API.
//! - [`cache::v1`]: `CacheStats`, counters of the entry cache.
//! - [`requests::v1`]: `Requests`, what each service answered per RPC, served by all three.
//! - [`bench::v1`]: `Echo`, the bench's same-run baseline.
//!
//! [`FILE_DESCRIPTOR_SET`] feeds server reflection, so grpcurl-style clients need no `.proto`.

pub mod user {
    pub mod v1 {
        tonic::include_proto!("userctl.user.v1");
    }
}

pub mod gateway {
    pub mod v1 {
        tonic::include_proto!("userctl.gateway.v1");
    }
}

pub mod cache {
    pub mod v1 {
        tonic::include_proto!("userctl.cache.v1");
    }
}

pub mod requests {
    pub mod v1 {
        tonic::include_proto!("userctl.requests.v1");
    }
}

pub mod bench {
    pub mod v1 {
        tonic::include_proto!("userctl.bench.v1");
    }
}

/// Every message and service above, encoded, for `tonic-reflection`.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/userctl_descriptor.bin"));
