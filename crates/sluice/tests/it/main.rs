mod kafka;
mod kafka_support;
