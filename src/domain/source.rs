//! Names that must match EventBridge's own patterns.

use super::limits::MAX_SOURCE_CHARS;

/// Whether `name` matches EventBridge's Source pattern for partner sources,
/// `aws\.partner(/[\.\-_A-Za-z0-9]+){2,}`, within 1 to 256 characters.
pub fn is_valid_source_name(name: &str) -> bool {
    if name.is_empty() || name.chars().count() > MAX_SOURCE_CHARS {
        return false;
    }
    let Some(rest) = name.strip_prefix("aws.partner/") else {
        return false;
    };
    let segments: Vec<&str> = rest.split('/').collect();
    segments.len() >= 2
        && segments.iter().all(|s| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
        })
}

/// Whether `region` looks like an AWS region name (`us-east-1`, `eu-central-2`,
/// `us-gov-west-1`): lowercase letters, digits and dashes, ending in a digit.
pub fn is_valid_region(region: &str) -> bool {
    !region.is_empty()
        && region.len() <= 32
        && region.contains('-')
        && region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && region.as_bytes()[0].is_ascii_lowercase()
        && region.as_bytes()[region.len() - 1].is_ascii_digit()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_pattern() {
        assert!(is_valid_source_name("aws.partner/example.com/demo/events"));
        assert!(is_valid_source_name("aws.partner/a/b"));
        assert!(!is_valid_source_name("aws.partner/a"));
        assert!(!is_valid_source_name("aws.partner//b"));
        assert!(!is_valid_source_name("aws.partner/a/b c"));
        assert!(!is_valid_source_name("aws.partnerx/a/b"));
        assert!(!is_valid_source_name("my.app"));
        let long = format!("aws.partner/a/{}", "b".repeat(250));
        assert!(!is_valid_source_name(&long));
    }

    #[test]
    fn region_names() {
        assert!(is_valid_region("us-east-1"));
        assert!(is_valid_region("us-gov-west-1"));
        assert!(!is_valid_region("US-EAST-1"));
        assert!(!is_valid_region("useast"));
        assert!(!is_valid_region(""));
    }
}
