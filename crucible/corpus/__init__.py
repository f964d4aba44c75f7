"""The text corpus: fetched from package registries, split by document, read through ``datasets``,
and the competition tokenizer trained on its training split. No hub is ever contacted."""
