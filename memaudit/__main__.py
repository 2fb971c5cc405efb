from memaudit.app.cli import main

main()
