"""The Open Inference Protocol (KServe V2): its core apart from transports (protocol), its tensors and
their binary data (tensors), runs in bounded chunks (chunks), over HTTP/REST (rest) and gRPC (grpc_server,
grpc_middleware)."""
