//! heapdump-analyze (under construction)
