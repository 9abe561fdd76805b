"""The engine: one door to scoring (inference.Inference) and what it is made of: the model on ONNX Runtime
(runtime), its calls, gathered by dynamic batching (calls), the estimator of log p(x|y), log p(x) and
p(y|x) with its Pareto k-hat diagnostic (estimator, adaptive), the out-of-distribution verdict (ood) and
the reasons to abstain (scoring), the inputs (images, pixels) and the answers' bodies (answers). It knows
nothing of HTTP or gRPC."""
