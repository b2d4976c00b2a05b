//! `net`: Kafka and MQTT wire codecs, listeners and connections.
//!
//! Not built yet: this crate arrives with the engine (issue 3). It imports no
//! other Shardline crate.
