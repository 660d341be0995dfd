from nnunet_slem.cli import main

if __name__ == "__main__":
    main()
