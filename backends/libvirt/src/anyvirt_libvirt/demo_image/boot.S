/*
 * anyvirt test guest: a 512-byte real-mode boot sector.
 *
 * Why it exists: tests need a guest that really boots under KVM (here a
 * software-nested KVM that cannot run a stock kernel) and under TCG, that
 * shows it is alive, that keeps state in RAM (so snapshot revert and live
 * migration can be told apart from a reboot), that persists something to its
 * disk, and that reacts to the ACPI power button like a real OS.
 *
 * What it does:
 *   1. prints "ANYVIRT-GUEST-UP" on COM1 (0x3f8);
 *   2. enables the power-button event (PWRBTN_EN) in the ACPI PM1 block;
 *   3. once a second (BIOS tick count at 0:046c, 18.2 Hz) increments a
 *      counter that starts at 0 on every cold boot, prints "COUNT <n>" and
 *      writes the sector "AVCT" + u32 little-endian counter to disk sector 1
 *      (LBA 1, CHS 0/0/2) through BIOS int 13h;
 *   4. when the power button status bit is set, prints "ANYVIRT-GUEST-OFF"
 *      and enters S5 (SLP_TYP=0 | SLP_EN) to power off.
 *
 * The ACPI PM I/O base is read from the PIIX4 PM function (PCI 0:1.3, config
 * register 0x40); SeaBIOS puts it at 0x600 on QEMU's i440fx "pc" machine,
 * which is the fallback when the register reads as nothing usable.
 *
 * Assemble with GNU as, link with boot.ld (ld --oformat binary).
 */
        .code16
        .section .text
        .globl  _start

        .set    COM1,       0x3f8
        .set    BIOS_TICKS, 0x046c
        .set    SECTOR_BUF, 0x0600      /* 512 free bytes below 0x7c00 */
        .set    TICKS_X10,  182         /* 18.2 ticks per second, times ten */

_start:
        cli
        xorw    %ax, %ax
        movw    %ax, %ds
        movw    %ax, %es
        movw    %ax, %ss
        movw    $0x7c00, %sp
        ljmp    $0, $start_cs0          /* normalise CS:IP to 0:7cxx */
start_cs0:
        sti
        cld
        movb    %dl, boot_drive

        /* COM1: 8N1, FIFO on; the divisor is irrelevant for QEMU's UART. */
        movw    $COM1+1, %dx
        xorb    %al, %al
        outb    %al, %dx                /* no UART interrupts */
        movw    $COM1+3, %dx
        movb    $0x03, %al
        outb    %al, %dx                /* 8 data bits, no parity, 1 stop */
        movw    $COM1+2, %dx
        movb    $0xc7, %al
        outb    %al, %dx                /* FIFO enabled and cleared */

        movw    $msg_up, %si
        call    puts

        /* PM base from PIIX4 PM (bus 0, dev 1, fn 3) config offset 0x40. */
        movl    $0x80000b40, %eax
        movw    $0xcf8, %dx
        outl    %eax, %dx
        movw    $0xcfc, %dx
        inl     %dx, %eax
        andw    $0xffc0, %ax
        jz      1f
        cmpw    $0xffc0, %ax
        jne     2f
1:      movw    $0x600, %ax
2:      movw    %ax, pm_base

        /* Clear a stale power-button status, then enable the event. */
        movw    pm_base, %dx
        movw    $0x0100, %ax
        outw    %ax, %dx                /* PM1_STS: write 1 to clear */
        addw    $2, %dx
        outw    %ax, %dx                /* PM1_EN: PWRBTN_EN */

        /* Sector buffer: "AVCT" then the counter, rest zero. */
        movw    $SECTOR_BUF, %di
        movw    $256, %cx
        xorw    %ax, %ax
        rep stosw
        movl    $0x54435641, SECTOR_BUF /* "AVCT" */

        movw    BIOS_TICKS, %ax
        movw    %ax, last_tick
        call    report                  /* counter 0 right after boot */

main_loop:
        hlt                             /* sleep until the next interrupt */

        /* Power button pressed? */
        movw    pm_base, %dx
        inw     %dx, %ax
        testw   $0x0100, %ax
        jnz     power_off

        /* Accumulate elapsed ticks (x10) so a second is 18.2 ticks. */
        movw    BIOS_TICKS, %ax
        movw    %ax, %bx
        subw    last_tick, %ax          /* ticks since the last look */
        movw    %bx, last_tick
        cmpw    $100, %ax               /* midnight wrap or odd jump: count 1 */
        jbe     3f
        movw    $1, %ax
3:      movw    $10, %cx
        mulw    %cx
        addw    %ax, tick_acc
        cmpw    $TICKS_X10, tick_acc
        jb      main_loop
        subw    $TICKS_X10, tick_acc
        incl    counter
        call    report
        jmp     main_loop

power_off:
        movw    $0x0100, %ax
        outw    %ax, %dx                /* acknowledge the button */
        movw    $msg_off, %si
        call    puts
        movw    pm_base, %dx
        addw    $4, %dx                 /* PM1_CNT */
        movw    $0x2000, %ax            /* SLP_TYP=0 (S5), SLP_EN */
        outw    %ax, %dx
        cli
4:      hlt
        jmp     4b

/* Print "COUNT <n>\r\n" and store the counter in disk sector 1. */
report:
        movw    $msg_count, %si
        call    puts
        movl    counter, %eax
        call    put_decimal
        movw    $msg_crlf, %si
        call    puts

        movl    counter, %eax
        movl    %eax, SECTOR_BUF+4
        movw    $0x0301, %ax            /* int 13h: write 1 sector */
        movw    $0x0002, %cx            /* cylinder 0, sector 2 (= LBA 1) */
        xorb    %dh, %dh                /* head 0 */
        movb    boot_drive, %dl
        movw    $SECTOR_BUF, %bx        /* ES:BX = 0:0600 */
        int     $0x13
        ret

/* Print EAX in decimal. */
put_decimal:
        movl    $10, %ecx
        xorw    %bx, %bx                /* digits pushed */
5:      xorl    %edx, %edx
        divl    %ecx
        pushw   %dx
        incw    %bx
        testl   %eax, %eax
        jnz     5b
6:      popw    %ax
        addb    $'0', %al
        call    putc
        decw    %bx
        jnz     6b
        ret

/* Print the NUL-terminated string at DS:SI. */
puts:
        lodsb
        testb   %al, %al
        jz      7f
        call    putc
        jmp     puts
7:      ret

/* Send AL to COM1 once the transmit holding register is empty. */
putc:
        pushw   %dx
        pushw   %ax
        movw    $COM1+5, %dx
8:      inb     %dx, %al
        testb   $0x20, %al
        jz      8b
        popw    %ax
        movw    $COM1, %dx
        outb    %al, %dx
        popw    %dx
        ret

msg_up:     .asciz  "\r\nANYVIRT-GUEST-UP\r\n"
msg_count:  .asciz  "COUNT "
msg_crlf:   .asciz  "\r\n"
msg_off:    .asciz  "ANYVIRT-GUEST-OFF\r\n"

        .balign 4
counter:    .long   0
pm_base:    .word   0
last_tick:  .word   0
tick_acc:   .word   0
boot_drive: .byte   0

        .section .signature, "a"
        .byte   0x55, 0xaa
