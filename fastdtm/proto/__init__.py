"""DTM's gRPC messages: dtmgimp.proto and the modules protoc generates from it (`make proto`)."""
