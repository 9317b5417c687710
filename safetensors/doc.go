// Package safetensors reads and writes the safetensors format
// (https://github.com/huggingface/safetensors) as streams: Open parses and
// validates only the header through an io.ReaderAt and hands out each
// tensor's bytes as an io.SectionReader; Writer writes a header and then
// takes the tensors' bytes in order. Memory is bounded by the header, never
// by a tensor, which is what aggregating multi-gigabyte models needs.
//
// The maintained Go reader, github.com/nlpodyssey/safetensors, deserializes
// a whole file from one []byte; it does not fit a streaming aggregator, so
// it is used only in the tests, to check that both read each other's files.
//
// The package must not import anything of the module: trainers and tools
// outside Barge may use it.
package safetensors
