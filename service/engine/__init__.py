"""The engine: one door to scoring (inference.Inference) and what it is made of: the model on ONNX Runtime
(runtime), its calls (calls, batching), the estimator of log p(x|y), log p(x) and p(y|x) (estimator,
adaptive, pareto), the out-of-distribution verdict (ood, abstention), the inputs (images, pixels,
preparation) and the answers' bodies (answers). It knows nothing of HTTP or gRPC."""
