"""Small servers mlu can run itself (an OpenAI-compatible endpoint for offline use and tests)."""
