//! DescribeConfigs v0, by hand: kafka-protocol 0.18 dropped it (Kafka 4.0
//! removed it, KIP-896), but Kafka 0.11-era admin clients still send it.
//! Decoded into, and encoded from, kafka-protocol's v1+ structs, so the
//! handler sees one DescribeConfigs type whatever the version.
//!
//! ```text
//! DescribeConfigsRequest v0              (v1 appends include_synonyms: bool)
//! +---------------------------------------+
//! | resources: array of (int32 count)     |
//! |   resource_type: i8                   |
//! |   resource_name: string               |
//! |   configuration_keys: nullable array  |  null = every key
//! |     of string                         |
//! +---------------------------------------+
//!
//! DescribeConfigsResponse v0
//! +---------------------------------------+
//! | throttle_time_ms: i32                 |
//! | results: array of                     |
//! |   error_code: i16                     |
//! |   error_message: nullable string      |
//! |   resource_type: i8                   |
//! |   resource_name: string               |
//! |   configs: array of                   |
//! |     name: string                      |
//! |     value: nullable string            |
//! |     read_only: bool                   |
//! |     is_default: bool                  |  v1+ replaced it by config_source: i8;
//! |     is_sensitive: bool                |  here is_default = (config_source == 5, DEFAULT_CONFIG)
//! +---------------------------------------+
//! ```

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::{DescribeConfigsRequest, DescribeConfigsResponse};
use kafka_protocol::protocol::StrBytes;

use crate::cursor::{Cursor, Encoding};
use crate::error::{DecodeError, EncodeError};
use crate::put::{put_array_len, put_nullable_str, put_str};

/// Kafka's ConfigSource DEFAULT_CONFIG.
const CONFIG_SOURCE_DEFAULT: i8 = 5;

/// Smallest resource entry: type, empty name, null key list.
const RESOURCE_BYTES_MIN: usize = 1 + 2 + 4;
/// Smallest string: its int16 length.
const STRING_BYTES_MIN: usize = 2;

fn str_bytes(bytes: Bytes, field: &'static str) -> Result<StrBytes, DecodeError> {
    StrBytes::from_utf8(bytes).map_err(|_| DecodeError::Invalid {
        field,
        reason: "not UTF-8",
    })
}

fn required(value: Option<Bytes>, field: &'static str) -> Result<Bytes, DecodeError> {
    value.ok_or(DecodeError::Invalid {
        field,
        reason: "null where a string is required",
    })
}

/// Decodes a v0 body into kafka-protocol's request type (include_synonyms
/// and include_documentation false, as v0 implies).
pub(crate) fn decode_request(body: &Bytes) -> Result<DescribeConfigsRequest, DecodeError> {
    let encoding = Encoding::Classic;
    let mut cursor = Cursor::new(body);
    let count = cursor.array_len(encoding, RESOURCE_BYTES_MIN, "describe_configs.resources")?;
    let mut resources = Vec::with_capacity(count);
    for _ in 0..count {
        let resource_type = cursor.i8("describe_configs.resource_type")?;
        let name = required(
            cursor.nullable_str_bytes(encoding, "describe_configs.resource_name")?,
            "describe_configs.resource_name",
        )?;
        let keys = match cursor.nullable_array_len(encoding, STRING_BYTES_MIN, "describe_configs.configuration_keys")? {
            None => None,
            Some(key_count) => {
                let mut keys = Vec::with_capacity(key_count);
                for _ in 0..key_count {
                    let key = required(
                        cursor.nullable_str_bytes(encoding, "describe_configs.configuration_key")?,
                        "describe_configs.configuration_key",
                    )?;
                    keys.push(str_bytes(key, "describe_configs.configuration_key")?);
                }
                Some(keys)
            }
        };
        resources.push(
            DescribeConfigsResource::default()
                .with_resource_type(resource_type)
                .with_resource_name(str_bytes(name, "describe_configs.resource_name")?)
                .with_configuration_keys(keys),
        );
    }
    Ok(DescribeConfigsRequest::default()
        .with_resources(resources)
        .with_include_synonyms(false)
        .with_include_documentation(false))
}

/// Appends the v0 body of `response` to `out`.
pub(crate) fn encode_response(response: &DescribeConfigsResponse, out: &mut BytesMut) -> Result<(), EncodeError> {
    let encoding = Encoding::Classic;
    out.put_i32(response.throttle_time_ms);
    put_array_len(
        out,
        encoding,
        Some(response.results.len()),
        "describe_configs_response.results",
    )?;
    for result in &response.results {
        out.put_i16(result.error_code);
        put_nullable_str(
            out,
            encoding,
            result.error_message.as_deref(),
            "describe_configs_response.error_message",
        )?;
        out.put_i8(result.resource_type);
        put_str(
            out,
            encoding,
            &result.resource_name,
            "describe_configs_response.resource_name",
        )?;
        put_array_len(
            out,
            encoding,
            Some(result.configs.len()),
            "describe_configs_response.configs",
        )?;
        for config in &result.configs {
            put_str(out, encoding, &config.name, "describe_configs_response.config.name")?;
            put_nullable_str(
                out,
                encoding,
                config.value.as_deref(),
                "describe_configs_response.config.value",
            )?;
            out.put_u8(u8::from(config.read_only));
            out.put_u8(u8::from(config.config_source == CONFIG_SOURCE_DEFAULT));
            out.put_u8(u8::from(config.is_sensitive));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::describe_configs_response::{DescribeConfigsResourceResult, DescribeConfigsResult};
    use kafka_protocol::protocol::Encodable;

    fn sample_request() -> DescribeConfigsRequest {
        DescribeConfigsRequest::default().with_resources(vec![
            DescribeConfigsResource::default()
                .with_resource_type(2)
                .with_resource_name(StrBytes::from_static_str("orders"))
                .with_configuration_keys(Some(vec![
                    StrBytes::from_static_str("retention.ms"),
                    StrBytes::from_static_str("cleanup.policy"),
                ])),
            DescribeConfigsResource::default()
                .with_resource_type(4)
                .with_resource_name(StrBytes::from_static_str("1"))
                .with_configuration_keys(None),
        ])
    }

    #[test]
    fn v0_request_is_v1_without_include_synonyms() {
        let request = sample_request();
        let mut v1 = BytesMut::new();
        request.encode(&mut v1, 1).unwrap();
        // The v1 encoding ends with include_synonyms (false): drop it for v0.
        let v1 = v1.freeze();
        let v0 = v1.slice(..v1.len() - 1);
        let decoded = decode_request(&v0).unwrap();
        assert_eq!(decoded, request);
        for length in 0..v0.len() {
            assert!(decode_request(&v0.slice(..length)).is_err());
        }
    }

    #[test]
    fn v0_response_has_the_v0_layout() {
        let response = DescribeConfigsResponse::default()
            .with_throttle_time_ms(4)
            .with_results(vec![DescribeConfigsResult::default()
                .with_error_message(None)
                .with_resource_type(2)
                .with_resource_name(StrBytes::from_static_str("orders"))
                .with_configs(vec![
                    DescribeConfigsResourceResult::default()
                        .with_name(StrBytes::from_static_str("retention.ms"))
                        .with_value(Some(StrBytes::from_static_str("1000")))
                        .with_config_source(CONFIG_SOURCE_DEFAULT)
                        .with_is_sensitive(true),
                    DescribeConfigsResourceResult::default()
                        .with_name(StrBytes::from_static_str("secret"))
                        .with_value(None)
                        .with_read_only(true)
                        .with_config_source(1),
                ])]);
        let mut out = BytesMut::new();
        encode_response(&response, &mut out).unwrap();
        let bytes = out.freeze();
        let mut cursor = Cursor::new(&bytes);
        let classic = Encoding::Classic;
        assert_eq!(cursor.i32("throttle").unwrap(), 4);
        assert_eq!(cursor.array_len(classic, 1, "results").unwrap(), 1);
        assert_eq!(cursor.i16("error_code").unwrap(), 0);
        assert_eq!(cursor.nullable_str(classic, "error_message").unwrap(), None);
        assert_eq!(cursor.i8("resource_type").unwrap(), 2);
        assert_eq!(cursor.str(classic, "resource_name").unwrap(), "orders");
        assert_eq!(cursor.array_len(classic, 1, "configs").unwrap(), 2);
        // name, value, read_only, is_default, is_sensitive
        assert_eq!(cursor.str(classic, "name").unwrap(), "retention.ms");
        assert_eq!(cursor.nullable_str(classic, "value").unwrap(), Some("1000"));
        assert_eq!(
            [
                cursor.bool("ro").unwrap(),
                cursor.bool("default").unwrap(),
                cursor.bool("sensitive").unwrap()
            ],
            [false, true, true]
        );
        assert_eq!(cursor.str(classic, "name").unwrap(), "secret");
        assert_eq!(cursor.nullable_str(classic, "value").unwrap(), None);
        assert_eq!(
            [
                cursor.bool("ro").unwrap(),
                cursor.bool("default").unwrap(),
                cursor.bool("sensitive").unwrap()
            ],
            [true, false, false]
        );
        assert_eq!(cursor.remaining(), 0);
    }
}
