"""The `reward` stage and its parts: Bradley–Terry reward models (`model`, `arch`, `config`),
the tiny world's knowledge head (`knowledge`, `tiny`, `defects`, `process`), and preference
data (`preferences`)."""
