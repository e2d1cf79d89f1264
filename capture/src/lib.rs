//! heapdump-capture (under construction)
