module sftlab.test/ollamarender

go 1.19
