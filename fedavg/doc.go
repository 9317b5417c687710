// Package fedavg averages a model's safetensors over the updates that
// federated training nodes sent back, weighted by how many samples each
// trained on (FedAvg), and averages their metrics the same way. It streams
// every tensor in bounded chunks: memory does not grow with a tensor or the
// model. It reads files, not registries; the CLI fetches the updates.
package fedavg
