package main

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
)

// Config is train/config.json, shipped in the model artifact's train layer
// so that every node trains alike.
type Config struct {
	Epochs       int     `json:"epochs"`
	LearningRate float64 `json:"learningRate"`
	BatchSize    int     `json:"batchSize"`
	Seed         uint64  `json:"seed"`
}

var defaultConfig = Config{Epochs: 2, LearningRate: 0.05, BatchSize: 32, Seed: 1}

func (c Config) validate() error {
	if c.Epochs < 1 || c.LearningRate <= 0 || c.BatchSize < 1 {
		return fmt.Errorf("config %+v: epochs and batchSize must be at least 1, learningRate above 0", c)
	}
	return nil
}

// Update is update.json: what FedAvg weighs the update by, and the metrics
// the round's global metrics average.
type Update struct {
	Samples int                `json:"samples"`
	Metrics map[string]float64 `json:"metrics"`
}

// Train runs one round on one node: the global model in modelDir, trained
// on data, written into out with update.json and, last, DONE. Its
// validation split (a fifth of the data) is never trained on. claim, if
// above 0, is the sample count reported instead of the true one.
func Train(modelDir, data, out string, round, claim int) (Update, error) {
	if err := os.MkdirAll(out, 0o755); err != nil {
		return Update{}, err
	}
	// A rerun must not leave the last run's DONE beside half-written files.
	if err := os.Remove(filepath.Join(out, "DONE")); err != nil && !os.IsNotExist(err) {
		return Update{}, err
	}
	m, err := LoadModel(filepath.Join(modelDir, modelFile))
	if err != nil {
		return Update{}, err
	}
	cfg, err := readConfig(filepath.Join(modelDir, "train", "config.json"))
	if err != nil {
		return Update{}, err
	}
	d, err := ReadData(data, m.Features, m.Classes)
	if err != nil {
		return Update{}, err
	}
	if d.Len() < 2 {
		return Update{}, fmt.Errorf("%s has %d samples: too few to train and validate", data, d.Len())
	}
	rng := rand.New(rand.NewPCG(cfg.Seed, uint64(round)))
	rng.Shuffle(d.Len(), func(i, j int) { d.X[i], d.X[j], d.Y[i], d.Y[j] = d.X[j], d.X[i], d.Y[j], d.Y[i] })
	cut := d.Len() - max(d.Len()/5, 1)
	train, validation := Dataset{X: d.X[:cut], Y: d.Y[:cut]}, Dataset{X: d.X[cut:], Y: d.Y[cut:]}

	m.SGD(train, cfg, rng)
	acc, loss := m.Evaluate(validation)
	u := Update{Samples: train.Len(), Metrics: map[string]float64{"accuracy": acc, "loss": loss}}
	if claim > 0 {
		u.Samples = claim
	}
	if err := m.Save(filepath.Join(out, modelFile)); err != nil {
		return Update{}, err
	}
	b, _ := json.Marshal(u)
	if err := writeFile(filepath.Join(out, "update.json"), b); err != nil {
		return Update{}, err
	}
	return u, os.WriteFile(filepath.Join(out, "DONE"), nil, 0o644)
}

func readConfig(path string) (Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Config{}, err
	}
	cfg := defaultConfig
	if err := json.Unmarshal(b, &cfg); err != nil {
		return Config{}, fmt.Errorf("%s: %w", path, err)
	}
	if err := cfg.validate(); err != nil {
		return Config{}, fmt.Errorf("%s: %w", path, err)
	}
	return cfg, nil
}

// saveModelDir writes a model directory as the model artifact carries it:
// model.safetensors and train/config.json.
func saveModelDir(dir string, m *Model, cfg Config) error {
	if err := os.MkdirAll(filepath.Join(dir, "train"), 0o755); err != nil {
		return err
	}
	if err := m.Save(filepath.Join(dir, modelFile)); err != nil {
		return err
	}
	b, _ := json.MarshalIndent(cfg, "", "  ")
	return writeFile(filepath.Join(dir, "train", "config.json"), append(b, '\n'))
}
